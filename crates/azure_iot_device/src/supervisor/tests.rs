//! The supervisor over a scripted engine on tokio's paused clock: renewal scheduling,
//! operations whose caller left, inbound back-pressure and failing waiters, without a
//! network.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex;

use azure_iot_core::retry::NoRetry;
use azure_iot_core::sas::SharedAccessKey;
use azure_iot_protocol::Identity;

use super::*;
use crate::client::DeviceClient;
use crate::options::ClientOptions;

/// What the engine was asked.
#[derive(Debug, Default)]
struct Log {
    connects: usize,
    closes: usize,
    submitted: Vec<(OpId, String)>,
    cancelled: Vec<OpId>,
    settled: Vec<(DeliveryTag, Outcome)>,
    /// The `reading` argument of the latest `next` call.
    reading: Option<bool>,
}

/// An engine that records its calls and reports the events the test sends it.
struct Scripted {
    log: Arc<Mutex<Log>>,
    events: mpsc::UnboundedReceiver<EngineEvent>,
    next_op: OpId,
}

impl Engine for Scripted {
    async fn connect(&mut self, _password: Option<&str>) -> Result<()> {
        self.log.lock().unwrap().connects += 1;
        Ok(())
    }

    fn submit(&mut self, operation: Operation, _deadline: Instant) -> OpId {
        self.next_op += 1;
        let what = format!("{operation:?}");
        self.log
            .lock()
            .unwrap()
            .submitted
            .push((self.next_op, what));
        self.next_op
    }

    fn cancel(&mut self, op: OpId) {
        self.log.lock().unwrap().cancelled.push(op);
    }

    fn settle(&mut self, tag: DeliveryTag, outcome: Outcome) -> Result<()> {
        self.log.lock().unwrap().settled.push((tag, outcome));
        Ok(())
    }

    async fn next(&mut self, reading: bool) -> EngineEvent {
        self.log.lock().unwrap().reading = Some(reading);
        match self.events.recv().await {
            Some(event) => event,
            None => std::future::pending().await,
        }
    }

    async fn close(&mut self) {
        self.log.lock().unwrap().closes += 1;
    }
}

struct Harness {
    client: DeviceClient,
    log: Arc<Mutex<Log>>,
    events: mpsc::UnboundedSender<EngineEvent>,
}

async fn harness(options: ClientOptions) -> Harness {
    let log = Arc::new(Mutex::new(Log::default()));
    let (events, rx) = mpsc::unbounded_channel();
    let mut engine = Scripted {
        log: log.clone(),
        events: rx,
        next_op: 0,
    };
    let auth = Arc::new(Auth {
        credential: Credential::Key {
            key: SharedAccessKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
                .unwrap(),
            key_name: None,
        },
        resource: ResourceUri::device("hub.example", "dev"),
        token_ttl: options.token_ttl,
        timeout: options.operation_timeout,
    });
    let renew_at = auth.connect(&mut engine).await.unwrap();
    #[cfg(feature = "https")]
    let files = {
        let tls = azure_iot_protocol::tls::client_config_builder(rustls::RootCertStore::empty())
            .unwrap()
            .with_no_client_auth();
        let dial = crate::transport::Dial {
            tls: Arc::new(tls),
            host: "hub.example".into(),
            port: 443,
            transport: crate::Transport::Mqtt,
            proxy: None,
        };
        Arc::new(crate::files::FileUploads::new(
            auth.clone(),
            Identity::device("dev"),
            dial,
            443,
            options.operation_timeout,
        ))
    };
    let client = DeviceClient::start(
        engine,
        auth,
        renew_at,
        Identity::device("dev"),
        &options,
        #[cfg(feature = "https")]
        files,
    );
    Harness {
        client,
        log,
        events,
    }
}

/// Lets the paused clock run (auto-advancing) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(start_paused = true)]
async fn the_token_is_renewed_at_85_percent_of_its_life_without_a_disconnection() {
    let h = harness(ClientOptions::default().token_ttl(Duration::from_secs(100))).await;
    let mut state = h.client.watch_connection_state();
    state.mark_unchanged();
    tokio::time::sleep(Duration::from_secs(80)).await;
    assert_eq!(h.log.lock().unwrap().connects, 1, "not yet");
    tokio::time::sleep(Duration::from_secs(6)).await;
    {
        let log = h.log.lock().unwrap();
        assert_eq!(
            (log.closes, log.connects),
            (1, 2),
            "renewed by reconnecting"
        );
    }
    assert!(!state.has_changed().unwrap(), "no disconnection reported");
    // And again 85 % into the new token.
    tokio::time::sleep(Duration::from_secs(86)).await;
    assert_eq!(h.log.lock().unwrap().connects, 3);
}

#[tokio::test(start_paused = true)]
async fn an_operation_whose_caller_left_is_withdrawn_and_frees_its_permit() {
    let h = harness(
        ClientOptions::default()
            .max_pending_operations(2)
            .operation_timeout(Duration::from_secs(5)),
    )
    .await;
    // A caller that drops its future after the operation reached the engine.
    let client = h.client.clone();
    let dropped = tokio::spawn(async move {
        client
            .send_event(azure_iot_core::Message::new("a").unwrap())
            .await
    });
    until("submitted", || h.log.lock().unwrap().submitted.len() == 1).await;
    let left = Instant::now();
    dropped.abort();
    let _ = dropped.await;
    until("withdrawn", || h.log.lock().unwrap().cancelled == vec![1]).await;
    assert!(left.elapsed() < SWEEP, "at once, not at the next sweep");
    assert_eq!(h.client.pending_operations(), 0, "its permit is free");

    // A caller that times out: the same, once its deadline has passed.
    let e = h
        .client
        .send_event(azure_iot_core::Message::new("b").unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    let timed_out = Instant::now();
    until("withdrawn", || {
        h.log.lock().unwrap().cancelled == vec![1, 2]
    })
    .await;
    assert!(timed_out.elapsed() < SWEEP);
    assert_eq!(h.client.pending_operations(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_stream_stops_reading_until_the_application_takes_from_it() {
    let h = harness(ClientOptions::default().inbound_capacity(1)).await;
    let client = h.client.clone();
    let subscribe = tokio::spawn(async move { client.method_requests().await });
    until("subscribe submitted", || {
        h.log.lock().unwrap().submitted.len() == 1
    })
    .await;
    h.events
        .send(EngineEvent::Done(1, Ok(Reply::Done)))
        .unwrap();
    let mut calls = subscribe.await.unwrap().unwrap();
    for i in 0..3 {
        let request = MethodRequest::from_wire(format!("m{i}"), i.to_string(), b"{}").unwrap();
        h.events.send(EngineEvent::Method(request)).unwrap();
    }
    until("reading paused", || {
        h.log.lock().unwrap().reading == Some(false)
    })
    .await;
    for i in 0..3 {
        assert_eq!(
            calls.recv().await.unwrap().name,
            format!("m{i}"),
            "in order"
        );
    }
    until("reading again", || {
        h.log.lock().unwrap().reading == Some(true)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_final_loss_fails_the_waiters_with_the_reason() {
    let h = harness(ClientOptions::default().retry_policy(NoRetry)).await;
    let client = h.client.clone();
    let send = tokio::spawn(async move {
        client
            .send_event(azure_iot_core::Message::new("a").unwrap())
            .await
    });
    until("submitted", || h.log.lock().unwrap().submitted.len() == 1).await;
    h.events
        .send(EngineEvent::Lost(DisconnectReason::Network))
        .unwrap();
    let e = send.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Disconnected, "{e}");
    assert_eq!(
        h.client.connection_state(),
        ConnectionState::Disconnected(DisconnectReason::RetriesExhausted)
    );
    let e = h
        .client
        .send_event(azure_iot_core::Message::new("b").unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Disconnected, "{e}");
}
