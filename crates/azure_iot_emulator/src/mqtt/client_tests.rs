//! The device side's sans-IO MQTT client (`azure_iot_protocol::mqtt::client`) against this
//! front-end and the device core, in memory: no sockets, no TLS, the client's clock simulated
//! (every `now` is an explicit instant the test moves), the hub's real state thread and log
//! behind the session. What one side of the protocol gets wrong the other would otherwise
//! share in its own tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_iot_core::message::Message;
use azure_iot_core::sas::{ResourceUri, SasToken, SharedAccessKey};
use azure_iot_protocol::Identity;
use azure_iot_protocol::mqtt::client::{Client, Config, Event, Feature, LossReason};
use azure_iot_protocol::mqtt::codec::{MAX_PACKET_BYTES, Packet, read_packet, write_packet};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::{MqttContext, session};
use crate::hub::faults::Fault;
use crate::hub::identity::IdentityBody;
use crate::hub::{Hub, HubState};
use crate::store::Store;
use crate::telemetry::TelemetryLog;

const HOST: &str = "h";
/// How long the test waits (real time) for the in-memory hub to answer.
const PATIENCE: Duration = Duration::from_secs(10);

struct Hubside {
    hub: Hub,
    telemetry: TelemetryLog,
    context: Arc<MqttContext>,
    token: String,
    /// Kept: sessions end when the shutdown channel closes.
    _shutdown: tokio::sync::watch::Sender<bool>,
}

async fn hub() -> Hubside {
    let state = HubState::load(Store::open(None).unwrap()).unwrap();
    let (hub, _thread) = Hub::start(state).unwrap();
    let created = hub
        .call(|s| s.put_identity("d1", None, IdentityBody::default(), None))
        .await
        .unwrap()
        .unwrap();
    let key = created["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();
    let key = SharedAccessKey::from_base64(key).unwrap();
    let token = SasToken::generate_with_ttl(
        &ResourceUri::device(HOST, "d1"),
        &key,
        None,
        Duration::from_secs(3600),
    );
    let telemetry = TelemetryLog::open(None).unwrap();
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let context = Arc::new(MqttContext {
        device: crate::device::DeviceCore {
            hub: hub.clone(),
            telemetry: telemetry.clone(),
            hostname: Arc::from(HOST),
        },
        shutdown: shutdown_rx,
        limits: crate::config::Limits::default(),
        dps: crate::provisioning::in_memory_dps(&hub).unwrap(),
    });
    Hubside {
        hub,
        telemetry,
        context,
        token: token.secret().to_owned(),
        _shutdown: shutdown,
    }
}

/// One connection of the client to the hub through an in-memory pipe.
struct Device {
    client: Client,
    io: DuplexStream,
    read: BytesMut,
    now: Instant,
    /// Every packet the client wrote, in order.
    sent: Vec<Packet>,
}

impl Device {
    fn new(keep_alive: Duration) -> Self {
        let client = Client::new(Config {
            identity: Identity::device("d1"),
            host: HOST.into(),
            model_id: None,
            client_type: "test".into(),
            keep_alive,
            max_in_flight: 16,
        });
        let (io, _) = tokio::io::duplex(1);
        Self {
            client,
            io,
            read: BytesMut::new(),
            now: Instant::now(),
            sent: Vec::new(),
        }
    }

    /// A new pipe with a new session behind it, and CONNECT on it.
    async fn connect(&mut self, hub: &Hubside) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        self.io = ours;
        self.read.clear();
        tokio::spawn(session::run(
            theirs,
            "127.0.0.1:1".parse().unwrap(),
            hub.context.clone(),
            Vec::new(),
        ));
        self.client.connect(self.now, Some(&hub.token));
        self.until(|e| matches!(e, Event::Connected)).await;
    }

    /// Writes what the client wants sent.
    async fn flush(&mut self) {
        let mut out = BytesMut::new();
        while let Some(packet) = self.client.poll_transmit(self.now) {
            write_packet(&packet, &mut out).unwrap();
            self.sent.push(packet);
        }
        if !out.is_empty() {
            self.io.write_all(&out).await.unwrap();
        }
    }

    /// Sends, reads and handles packets until an event matches; returns every event seen.
    async fn until(&mut self, mut wanted: impl FnMut(&Event) -> bool) -> Vec<Event> {
        let mut seen = Vec::new();
        loop {
            self.flush().await;
            while let Some(event) = self.client.poll_event() {
                let hit = wanted(&event);
                seen.push(event);
                if hit {
                    return seen;
                }
            }
            let packet = self.next_packet().await.expect("the hub closed the pipe");
            self.client.handle_packet(self.now, packet).unwrap();
        }
    }

    async fn next_packet(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = read_packet(&mut self.read, MAX_PACKET_BYTES).unwrap() {
                return Some(packet);
            }
            let n = tokio::time::timeout(PATIENCE, self.io.read_buf(&mut self.read))
                .await
                .expect("the hub answered in time")
                .unwrap();
            if n == 0 {
                return None;
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.client.handle_timeout(self.now);
    }
}

#[tokio::test]
async fn keep_alive_pings_are_answered_and_a_lost_pingresp_ends_the_connection() {
    let hub = hub().await;
    let mut device = Device::new(Duration::from_secs(60));
    device.connect(&hub).await;
    for _ in 0..3 {
        device.advance(Duration::from_secs(60));
        device.flush().await;
        // The hub's PINGRESP arrives and keeps the connection.
        let packet = device.next_packet().await.unwrap();
        assert_eq!(packet, Packet::PingResp);
        device.client.handle_packet(device.now, packet).unwrap();
        assert!(device.client.is_connected());
    }
    // Now the PINGRESP is lost: half a keep-alive later the client gives the connection up.
    device.advance(Duration::from_secs(60));
    device.flush().await;
    assert_eq!(device.next_packet().await, Some(Packet::PingResp));
    device.advance(Duration::from_secs(30));
    let events: Vec<Event> = std::iter::from_fn(|| device.client.poll_event()).collect();
    assert!(
        events.contains(&Event::ConnectionLost(LossReason::KeepAliveTimeout)),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_unacknowledged_publish_is_resent_with_dup_on_the_next_connection() {
    let hub = hub().await;
    let mut device = Device::new(Duration::from_secs(60));
    device.connect(&hub).await;
    hub.hub
        .call(|s| {
            s.inject(Fault::WithholdPubacks {
                device_id: "d1".into(),
                module_id: None,
            })
        })
        .await
        .unwrap()
        .unwrap();
    let far = device.now + Duration::from_secs(600);
    let message = Message::new("once").unwrap();
    let op = device.client.send_telemetry(device.now, &message, far);
    device.flush().await;
    // Logged, not acknowledged: wait (bounded) until the log has it.
    let logged = tokio::time::timeout(PATIENCE, async {
        while hub
            .telemetry
            .read(0, 10, None, None)
            .await
            .unwrap()
            .is_empty()
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(logged.is_ok());
    let Some(Packet::Publish(first)) = device.sent.last().cloned() else {
        panic!("the telemetry PUBLISH was sent: {:?}", device.sent)
    };
    assert!(!first.dup);
    device.client.connection_lost(device.now);
    hub.hub.call(|s| s.clear_faults(None)).await.unwrap();
    device.advance(Duration::from_secs(1));
    device.sent.clear();
    device.connect(&hub).await;
    // The resend carries the DUP flag and the same packet id; the hub acknowledges it.
    let events = device.until(|e| *e == Event::Acked(op)).await;
    assert!(events.contains(&Event::Acked(op)), "{events:?}");
    let resent: Vec<_> = device
        .sent
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(resent.len(), 1, "{:?}", device.sent);
    assert!(resent[0].dup, "the resend has DUP set");
    assert_eq!(resent[0].pkid, first.pkid, "and the same packet id");
    let stored = hub.telemetry.read(0, 10, None, None).await.unwrap();
    assert_eq!(
        stored.len(),
        2,
        "at least once: the first copy and the resend"
    );
    assert!(stored.iter().all(|e| e.message.body().as_ref() == b"once"));
}

#[tokio::test]
async fn cloud_to_device_pubacks_go_in_arrival_order_and_complete_on_the_hub() {
    let hub = hub().await;
    for i in 0..3 {
        let message = Message::new(format!("c{i}")).unwrap();
        hub.hub
            .call(move |s| s.enqueue_c2d("d1", message))
            .await
            .unwrap()
            .unwrap();
    }
    let mut device = Device::new(Duration::from_secs(60));
    device.connect(&hub).await;
    device.client.subscribe(device.now, Feature::CloudToDevice);
    let mut deliveries = Vec::new();
    device
        .until(|e| {
            if let Event::CloudToDevice { delivery, .. } = e {
                deliveries.push(*delivery);
            }
            deliveries.len() == 3
        })
        .await;
    // Completing the last two first sends no PUBACK: the first is still open (4.6.0-2).
    device.client.complete(device.now, deliveries[2]);
    device.client.complete(device.now, deliveries[1]);
    assert_eq!(device.client.poll_transmit(device.now), None);
    device.client.complete(device.now, deliveries[0]);
    device.flush().await;
    // The hub completes all three.
    let drained = tokio::time::timeout(PATIENCE, async {
        while hub.hub.call(|s| s.c2d_count("d1")).await.unwrap() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(drained.is_ok(), "the hub completed every message");
}

#[tokio::test]
async fn the_twin_is_answered_once_responses_are_subscribed() {
    let hub = hub().await;
    let mut device = Device::new(Duration::from_secs(60));
    device.connect(&hub).await;
    device.client.subscribe(device.now, Feature::TwinResponses);
    let far = device.now + Duration::from_secs(60);
    let (_, request_id) = device.client.twin_get(device.now, far);
    let events = device
        .until(|e| matches!(e, Event::TwinResponse { .. }))
        .await;
    let Some(Event::TwinResponse {
        request_id: answered,
        status,
        ..
    }) = events.last()
    else {
        unreachable!()
    };
    assert_eq!((answered, *status), (&request_id, 200));
}

#[tokio::test]
async fn packet_ids_wrap_past_65535_and_every_publish_is_acknowledged() {
    let hub = hub().await;
    let mut device = Device::new(Duration::ZERO);
    device.connect(&hub).await;
    let far = device.now + Duration::from_secs(3600);
    let message = Message::new("w").unwrap();
    let total: usize = 65_600;
    let (mut queued, mut acked) = (0, 0);
    let (mut last_id, mut wrapped) = (0u16, false);
    while acked < total {
        while queued < total && device.client.queued() + device.client.in_flight() < 64 {
            device.client.send_telemetry(device.now, &message, far);
            queued += 1;
        }
        device.flush().await;
        for packet in device.sent.drain(..) {
            if let Packet::Publish(publish) = packet {
                assert_ne!(publish.pkid, 0, "packet id 0 is never used");
                if publish.pkid < last_id {
                    wrapped = true;
                }
                last_id = publish.pkid;
            }
        }
        let events = device.until(|e| matches!(e, Event::Acked(_))).await;
        acked += events
            .iter()
            .filter(|e| matches!(e, Event::Acked(_)))
            .count();
    }
    assert!(wrapped, "the packet ids wrapped");
    assert_eq!(acked, total);
    // Every message is in the log once: the newest has sequence number `total`.
    let last = hub
        .telemetry
        .read(total as u64 - 1, 10, None, None)
        .await
        .unwrap();
    assert_eq!(last.len(), 1, "exactly {total} messages logged");
}
