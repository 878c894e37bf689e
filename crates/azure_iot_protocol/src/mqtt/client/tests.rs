//! The client state machine on a simulated clock: every `Instant` is made by the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::mqtt::codec::{ConnAck, SubAck};
use proptest::prelude::*;

const KEEP_ALIVE: Duration = Duration::from_secs(60);
const LONG: Duration = Duration::from_secs(3600);

fn config(identity: Identity) -> Config {
    Config {
        identity,
        host: "hub.example".into(),
        model_id: None,
        client_type: "test".into(),
        keep_alive: KEEP_ALIVE,
        max_in_flight: 8,
    }
}

fn client() -> Client {
    Client::new(config(Identity::device("dev 1")))
}

/// Connects `c` at `now` and returns everything it sent after CONNECT.
fn connect(c: &mut Client, now: Instant) -> Vec<Packet> {
    c.connect(now, Some("pw"));
    match c.poll_transmit(now) {
        Some(Packet::Connect(connect)) => assert!(!connect.clean_session),
        other => panic!("expected CONNECT, got {other:?}"),
    }
    c.handle_packet(
        now,
        Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, true)),
    )
    .unwrap();
    assert_eq!(c.poll_event(), Some(Event::Connected));
    drain(c, now)
}

fn drain(c: &mut Client, now: Instant) -> Vec<Packet> {
    std::iter::from_fn(|| c.poll_transmit(now)).collect()
}

fn events(c: &mut Client) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn publish_ids(packets: &[Packet]) -> Vec<(u16, bool)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.pkid, p.dup)),
            _ => None,
        })
        .collect()
}

fn c2d(pkid: u16, body: &str) -> Packet {
    let mut p = Publish::new(
        "devices/dev%201/messages/devicebound/%24.mid=m",
        QoS::AtLeastOnce,
        body.to_owned(),
    );
    p.pkid = pkid;
    Packet::Publish(p)
}

fn message() -> Message {
    Message::new("x").unwrap()
}

#[test]
fn connect_names_the_identity_and_keeps_the_session() {
    let mut c = client();
    let t0 = Instant::now();
    c.connect(t0, Some("pw"));
    let Some(Packet::Connect(connect)) = c.poll_transmit(t0) else {
        panic!("not CONNECT")
    };
    assert_eq!(connect.client_id, "dev 1");
    assert!(!connect.clean_session);
    assert_eq!(connect.keep_alive, 60);
    let login = connect.login.expect("login");
    assert!(
        login
            .username
            .starts_with("hub.example/dev 1/?api-version=2021-04-12")
    );
    assert_eq!(login.password, "pw");
    // Nothing else goes out before CONNACK.
    c.send_telemetry(t0, &message(), t0 + LONG);
    assert_eq!(c.poll_transmit(t0), None);
}

#[test]
fn a_refused_connect_is_an_event() {
    let mut c = client();
    let t0 = Instant::now();
    c.connect(t0, None);
    drain(&mut c, t0);
    c.handle_packet(
        t0,
        Packet::ConnAck(ConnAck::new(ConnectReturnCode::NotAuthorized, false)),
    )
    .unwrap();
    assert_eq!(
        c.poll_event(),
        Some(Event::Refused(ConnectReturnCode::NotAuthorized))
    );
    assert!(is_unauthorized(ConnectReturnCode::NotAuthorized));
    assert!(!c.is_connected());
}

#[test]
fn telemetry_topic_carries_properties_and_the_puback_completes_it() {
    let mut c = client();
    let t0 = Instant::now();
    connect(&mut c, t0);
    let m = Message::builder("x")
        .message_id("m1")
        .property("k", "v")
        .build()
        .unwrap();
    let op = c.send_telemetry(t0, &m, t0 + LONG);
    let sent = drain(&mut c, t0);
    let [Packet::Publish(p)] = &sent[..] else {
        panic!("{sent:?}")
    };
    assert_eq!(p.topic, "devices/dev%201/messages/events/%24.mid=m1&k=v");
    assert_eq!((p.qos, p.pkid, p.dup), (QoS::AtLeastOnce, 1, false));
    c.handle_packet(t0, Packet::PubAck(PubAck::new(1))).unwrap();
    assert_eq!(c.poll_event(), Some(Event::Acked(op)));
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn keep_alive_pings_after_idle_and_a_missing_pong_ends_the_connection() {
    let mut c = client();
    let t0 = Instant::now();
    connect(&mut c, t0);
    assert_eq!(c.poll_timeout(), Some(t0 + KEEP_ALIVE));
    // Early: nothing.
    c.handle_timeout(t0 + KEEP_ALIVE / 2);
    assert!(drain(&mut c, t0 + KEEP_ALIVE / 2).is_empty());
    // Idle for a keep-alive: PINGREQ.
    let t1 = t0 + KEEP_ALIVE;
    c.handle_timeout(t1);
    assert_eq!(drain(&mut c, t1), vec![Packet::PingReq]);
    // Answered: the next PINGREQ is a keep-alive later.
    c.handle_packet(t1, Packet::PingResp).unwrap();
    assert_eq!(c.poll_timeout(), Some(t1 + KEEP_ALIVE));
    let t2 = t1 + KEEP_ALIVE;
    c.handle_timeout(t2);
    assert_eq!(drain(&mut c, t2), vec![Packet::PingReq]);
    // Not answered within half a keep-alive: dead.
    assert_eq!(c.poll_timeout(), Some(t2 + KEEP_ALIVE / 2));
    c.handle_timeout(t2 + KEEP_ALIVE / 2 - Duration::from_millis(1));
    assert!(events(&mut c).is_empty());
    c.handle_timeout(t2 + KEEP_ALIVE / 2);
    assert_eq!(
        events(&mut c),
        vec![Event::ConnectionLost(LossReason::KeepAliveTimeout)]
    );
    assert!(!c.is_connected());
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn sending_anything_postpones_the_ping() {
    let mut c = client();
    let t0 = Instant::now();
    connect(&mut c, t0);
    let t1 = t0 + Duration::from_secs(50);
    c.send_telemetry(t1, &message(), t1 + LONG);
    drain(&mut c, t1);
    assert_eq!(c.poll_timeout(), Some(t1 + KEEP_ALIVE));
}

#[test]
fn with_reading_paused_pings_go_on_but_a_missing_pong_is_not_fatal() {
    let mut c = client();
    let t0 = Instant::now();
    connect(&mut c, t0);
    c.pause_reading(t0);
    let mut now = t0;
    for _ in 0..5 {
        now += KEEP_ALIVE;
        assert_eq!(c.poll_timeout(), Some(now));
        c.handle_timeout(now);
        assert_eq!(drain(&mut c, now), vec![Packet::PingReq]);
        assert!(events(&mut c).is_empty(), "still connected");
    }
    // Reading again: the outstanding PINGREQ gets half a keep-alive from now.
    c.resume_reading(now);
    assert_eq!(c.poll_timeout(), Some(now + KEEP_ALIVE / 2));
    c.handle_packet(now, Packet::PingResp).unwrap();
    assert!(c.is_connected());
}

#[test]
fn unacknowledged_publishes_are_resent_with_dup_in_order_after_resume() {
    let mut c = client();
    let t0 = Instant::now();
    connect(&mut c, t0);
    let ops: Vec<OpId> = (0..3)
        .map(|_| c.send_telemetry(t0, &message(), t0 + LONG))
        .collect();
    assert_eq!(
        publish_ids(&drain(&mut c, t0)),
        vec![(1, false), (2, false), (3, false)]
    );
    c.handle_packet(t0, Packet::PubAck(PubAck::new(2))).unwrap();
    assert_eq!(c.poll_event(), Some(Event::Acked(ops[1])));
    // Lost, then a new connection: 1 and 3 again, same ids, DUP set, in order.
    c.connection_lost(t0);
    let later = c.send_telemetry(t0, &message(), t0 + LONG);
    let t1 = t0 + Duration::from_secs(5);
    let sent = connect(&mut c, t1);
    assert_eq!(publish_ids(&sent), vec![(1, true), (3, true), (4, false)]);
    c.handle_packet(t1, Packet::PubAck(PubAck::new(3))).unwrap();
    c.handle_packet(t1, Packet::PubAck(PubAck::new(1))).unwrap();
    c.handle_packet(t1, Packet::PubAck(PubAck::new(4))).unwrap();
    assert_eq!(
        events(&mut c),
        vec![
            Event::Acked(ops[2]),
            Event::Acked(ops[0]),
            Event::Acked(later)
        ]
    );
}

#[test]
fn subscriptions_are_made_again_on_resume_before_the_resends() {
    let mut c = client();
    let t0 = Instant::now();
    connect(&mut c, t0);
    let op = c.subscribe(t0, Feature::Methods).unwrap();
    let sent = drain(&mut c, t0);
    let [Packet::Subscribe(s)] = &sent[..] else {
        panic!("{sent:?}")
    };
    assert_eq!(s.filters[0].path, "$iothub/methods/POST/#");
    let mut ack = SubAck::new(s.pkid, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    c.handle_packet(t0, Packet::SubAck(ack.clone())).unwrap();
    assert_eq!(
        c.poll_event(),
        Some(Event::Subscribed {
            op,
            feature: Feature::Methods,
            granted: true
        })
    );
    // Already granted: answered at once, nothing sent.
    let again = c.subscribe(t0, Feature::Methods).unwrap();
    assert!(drain(&mut c, t0).is_empty());
    assert!(matches!(c.poll_event(), Some(Event::Subscribed { op, .. }) if op == again));

    c.send_telemetry(t0, &message(), t0 + LONG);
    drain(&mut c, t0);
    c.connection_lost(t0);
    let sent = connect(&mut c, t0);
    assert!(
        matches!(&sent[..], [Packet::Subscribe(s), Packet::Publish(p)]
            if s.filters[0].path == "$iothub/methods/POST/#" && p.dup),
        "{sent:?}"
    );
    // The resubscribe's SUBACK needs no caller.
    let Packet::Subscribe(s) = &sent[0] else {
        unreachable!()
    };
    ack.pkid = s.pkid;
    c.handle_packet(t0, Packet::SubAck(ack)).unwrap();
    assert!(events(&mut c).is_empty());
}

#[test]
fn a_twin_request_subscribes_first_and_its_answer_carries_the_request_id() {
    let mut c = client();
    let t0 = Instant::now();
    connect(&mut c, t0);
    let (_, rid) = c.twin_get(t0, t0 + LONG);
    let sent = drain(&mut c, t0);
    assert!(
        matches!(&sent[..], [Packet::Subscribe(s), Packet::Publish(p)]
            if s.filters[0].path == "$iothub/twin/res/#"
            && p.topic == format!("$iothub/twin/GET/?$rid={rid}")),
        "{sent:?}"
    );
    let answer = Publish::new(
        format!("$iothub/twin/res/200/?$rid={rid}"),
        QoS::AtMostOnce,
        "{}",
    );
    c.handle_packet(t0, Packet::Publish(answer)).unwrap();
    assert!(matches!(
        c.poll_event(),
        Some(Event::TwinResponse { request_id, status: 200, .. }) if request_id == rid
    ));
    // A second request does not subscribe again.
    c.patch_reported(t0, Bytes::from_static(b"{}"), t0 + LONG);
    assert!(matches!(&drain(&mut c, t0)[..], [Packet::Publish(_)]));
}

#[test]
fn packet_ids_wrap_and_skip_ids_still_in_flight() {
    let mut c = client();
    let t0 = Instant::now();
    connect(&mut c, t0);
    // Ids 1 and 2 stay in flight.
    c.send_telemetry(t0, &message(), t0 + LONG);
    c.send_telemetry(t0, &message(), t0 + LONG);
    assert_eq!(
        publish_ids(&drain(&mut c, t0)),
        vec![(1, false), (2, false)]
    );
    // Skip ahead to the end of the id space.
    c.next_pkid = u16::MAX - 1;
    let a = c.send_telemetry(t0, &message(), t0 + LONG);
    let b = c.send_telemetry(t0, &message(), t0 + LONG);
    assert_eq!(
        publish_ids(&drain(&mut c, t0)),
        vec![(u16::MAX, false), (3, false)],
        "0 is never used, 1 and 2 are in flight"
    );
    c.handle_packet(t0, Packet::PubAck(PubAck::new(3))).unwrap();
    c.handle_packet(t0, Packet::PubAck(PubAck::new(u16::MAX)))
        .unwrap();
    assert_eq!(events(&mut c), vec![Event::Acked(b), Event::Acked(a)]);
    // A cancelled PUBLISH keeps its id until its PUBACK, which completes nothing.
    let x = c.send_telemetry(t0, &message(), t0 + LONG);
    assert_eq!(publish_ids(&drain(&mut c, t0)), vec![(4, false)]);
    assert!(c.cancel(x));
    c.next_pkid = 3;
    let y = c.send_telemetry(t0, &message(), t0 + LONG);
    assert_eq!(publish_ids(&drain(&mut c, t0)), vec![(5, false)]);
    c.handle_packet(t0, Packet::PubAck(PubAck::new(4))).unwrap();
    assert!(events(&mut c).is_empty());
    c.handle_packet(t0, Packet::PubAck(PubAck::new(5))).unwrap();
    assert_eq!(events(&mut c), vec![Event::Acked(y)]);
}

#[test]
fn the_in_flight_bound_holds_and_acks_make_room() {
    let mut c = client();
    let t0 = Instant::now();
    connect(&mut c, t0);
    for _ in 0..20 {
        c.send_telemetry(t0, &message(), t0 + LONG);
    }
    assert_eq!(drain(&mut c, t0).len(), 8);
    assert_eq!((c.in_flight(), c.queued()), (8, 12));
    c.handle_packet(t0, Packet::PubAck(PubAck::new(3))).unwrap();
    assert_eq!(publish_ids(&drain(&mut c, t0)), vec![(9, false)]);
}

#[test]
fn inbound_qos1_is_acknowledged_in_arrival_order() {
    let mut c = client();
    let t0 = Instant::now();
    connect(&mut c, t0);
    c.handle_packet(t0, c2d(10, "a")).unwrap();
    c.handle_packet(t0, c2d(11, "b")).unwrap();
    // A QoS 1 method call behind them is handled at once, but acknowledged after them.
    let mut call = Publish::new("$iothub/methods/POST/m/?$rid=1", QoS::AtLeastOnce, "{}");
    call.pkid = 12;
    c.handle_packet(t0, Packet::Publish(call)).unwrap();
    let deliveries: Vec<Delivery> = events(&mut c)
        .into_iter()
        .filter_map(|e| match e {
            Event::CloudToDevice { delivery, message } => {
                assert!(message.body().as_ref() == b"a" || message.body().as_ref() == b"b");
                Some(delivery)
            }
            Event::MethodRequest(_) => None,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(drain(&mut c, t0).is_empty(), "nothing acknowledged yet");
    // Completing the second first sends nothing: the first is still open.
    assert!(c.complete(t0, deliveries[1]));
    assert!(drain(&mut c, t0).is_empty());
    assert!(c.complete(t0, deliveries[0]));
    assert_eq!(
        drain(&mut c, t0),
        vec![
            Packet::PubAck(PubAck::new(10)),
            Packet::PubAck(PubAck::new(11)),
            Packet::PubAck(PubAck::new(12)),
        ]
    );
    assert!(!c.complete(t0, deliveries[0]), "already completed");
}

#[test]
fn a_completion_from_an_earlier_connection_sends_nothing() {
    let mut c = client();
    let t0 = Instant::now();
    connect(&mut c, t0);
    c.handle_packet(t0, c2d(10, "a")).unwrap();
    let Some(Event::CloudToDevice { delivery, .. }) = c.poll_event() else {
        panic!()
    };
    c.connection_lost(t0);
    connect(&mut c, t0);
    assert!(!c.complete(t0, delivery));
    assert!(drain(&mut c, t0).is_empty());
}

#[test]
fn an_operation_past_its_deadline_is_never_sent() {
    let mut c = client();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(10);
    // Offline: queued, and the expiry is a deadline to wake for.
    let op = c.send_telemetry(t0, &message(), deadline);
    assert_eq!(c.poll_timeout(), Some(deadline));
    c.handle_timeout(deadline);
    assert_eq!(events(&mut c), vec![Event::Expired(op)]);
    // Sent, lost, expired while offline: not sent again.
    connect(&mut c, t0);
    let op = c.send_telemetry(t0, &message(), deadline);
    drain(&mut c, t0);
    c.connection_lost(t0);
    assert_eq!(c.in_flight(), 1);
    let sent = connect(&mut c, deadline);
    assert!(publish_ids(&sent).is_empty(), "{sent:?}");
    assert_eq!(events(&mut c), vec![Event::Expired(op)]);
    assert_eq!(c.in_flight(), 0);
    // Cancelled while waiting: never sent.
    let later = t0 + LONG;
    c.handle_timeout(later);
    assert_eq!(drain(&mut c, later), vec![Packet::PingReq]);
    for _ in 0..8 {
        c.send_telemetry(later, &message(), later + LONG);
    }
    let waiting = c.send_telemetry(later, &message(), later + LONG);
    assert_eq!(drain(&mut c, later).len(), 8);
    assert!(c.cancel(waiting));
    c.handle_packet(later, Packet::PubAck(PubAck::new(2)))
        .unwrap();
    assert!(drain(&mut c, later).is_empty());
}

#[test]
fn modules_have_no_cloud_to_device_subscription() {
    let mut c = Client::new(config(Identity::module("d", "m")));
    assert_eq!(c.subscribe(Instant::now(), Feature::CloudToDevice), None);
}

#[test]
fn what_a_hub_never_sends_ends_the_connection() {
    let t0 = Instant::now();
    for packet in [
        Packet::PingReq,
        Packet::Publish(Publish::new(
            "devices/x/messages/events/",
            QoS::AtMostOnce,
            "",
        )),
        Packet::Publish(Publish::new(
            "$iothub/methods/POST/m/?$rid=1",
            QoS::AtMostOnce,
            "{",
        )),
    ] {
        let mut c = client();
        connect(&mut c, t0);
        assert!(c.handle_packet(t0, packet).is_err());
        assert!(matches!(
            c.poll_event(),
            Some(Event::ConnectionLost(LossReason::Protocol(_)))
        ));
        assert!(!c.is_connected());
    }
}

fn arbitrary_packet() -> impl Strategy<Value = Packet> {
    let topic = prop_oneof![
        Just("devices/dev%201/messages/devicebound/a=b".to_owned()),
        Just("$iothub/twin/res/200/?$rid=1".to_owned()),
        Just("$iothub/twin/PATCH/properties/desired/?$version=3".to_owned()),
        Just("$iothub/methods/POST/m/?$rid=1".to_owned()),
        ".{0,40}",
    ];
    prop_oneof![
        (
            topic,
            any::<u16>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..16)
        )
            .prop_map(|(t, pkid, qos1, body)| {
                let mut p = Publish::new(
                    t,
                    if qos1 {
                        QoS::AtLeastOnce
                    } else {
                        QoS::AtMostOnce
                    },
                    body,
                );
                p.pkid = if qos1 { pkid } else { 0 };
                Packet::Publish(p)
            }),
        any::<u16>().prop_map(|id| Packet::PubAck(PubAck::new(id))),
        (any::<u16>(), any::<bool>()).prop_map(|(id, ok)| Packet::SubAck(SubAck::new(
            id,
            vec![if ok {
                SubscribeReasonCode::Success(QoS::AtLeastOnce)
            } else {
                SubscribeReasonCode::Failure
            }]
        ))),
        Just(Packet::PingResp),
        Just(Packet::PingReq),
        Just(Packet::Disconnect),
        Just(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false
        ))),
        Just(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::NotAuthorized,
            false
        ))),
    ]
}

/// One step of a random run: a packet, a command, or time passing.
#[derive(Debug, Clone)]
enum Step {
    Packet(Packet),
    Send,
    Subscribe(u8),
    Cancel(u64),
    Complete(u64),
    Lost,
    Connect,
    Wait(u16),
    Pause(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => arbitrary_packet().prop_map(Step::Packet),
        2 => Just(Step::Send),
        1 => any::<u8>().prop_map(Step::Subscribe),
        1 => (0u64..40).prop_map(Step::Cancel),
        1 => (0u64..40).prop_map(Step::Complete),
        1 => Just(Step::Lost),
        1 => Just(Step::Connect),
        2 => any::<u16>().prop_map(Step::Wait),
        1 => any::<bool>().prop_map(Step::Pause),
    ]
}

proptest! {
    #[test]
    fn arbitrary_packet_and_command_sequences_never_panic(
        steps in proptest::collection::vec(step(), 0..80)
    ) {
        let mut c = client();
        let mut now = Instant::now();
        connect(&mut c, now);
        for step in steps {
            match step {
                Step::Packet(p) => { let _ = c.handle_packet(now, p); }
                Step::Send => { c.send_telemetry(now, &message(), now + Duration::from_secs(30)); }
                Step::Subscribe(f) => {
                    let feature = [Feature::CloudToDevice, Feature::TwinResponses,
                        Feature::DesiredPatches, Feature::Methods][usize::from(f % 4)];
                    c.subscribe(now, feature);
                }
                Step::Cancel(op) => { c.cancel(OpId(op)); }
                Step::Complete(d) => { c.complete(now, Delivery(d)); }
                Step::Lost => c.connection_lost(now),
                Step::Connect => c.connect(now, None),
                Step::Wait(ms) => {
                    now += Duration::from_millis(u64::from(ms) * 10);
                    if c.poll_timeout().is_some_and(|t| t <= now) {
                        c.handle_timeout(now);
                    }
                }
                Step::Pause(true) => c.pause_reading(now),
                Step::Pause(false) => c.resume_reading(now),
            }
            while c.poll_transmit(now).is_some() {}
            while c.poll_event().is_some() {}
            prop_assert!(c.in_flight() <= 8);
        }
    }
}

#[test]
fn debug_never_shows_the_token() {
    let mut c = client();
    c.connect(
        Instant::now(),
        Some("SharedAccessSignature sr=x&sig=SECRET&se=1"),
    );
    assert!(!format!("{c:?}").contains("SECRET"));
}

#[test]
fn cancelled_publishes_keep_their_slot_until_acknowledged() {
    let t0 = Instant::now();
    let mut c = Client::new(Config {
        max_in_flight: 2,
        ..config(Identity::device("d"))
    });
    connect(&mut c, t0);
    let far = t0 + LONG;
    let message = Message::new("m").unwrap();
    let a = c.send_telemetry(t0, &message, far);
    let b = c.send_telemetry(t0, &message, far);
    let ids: Vec<u16> = publish_ids(&drain(&mut c, t0))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len(), 2);
    // Both cancelled while on the wire: no new PUBLISH may take their slots.
    assert!(c.cancel(a) && c.cancel(b));
    let _next = c.send_telemetry(t0, &message, far);
    assert!(drain(&mut c, t0).is_empty(), "slots still taken");
    assert_eq!(c.in_flight(), 2);
    // A PUBACK for a cancelled PUBLISH frees its slot.
    c.handle_packet(t0, Packet::PubAck(PubAck::new(ids[0])))
        .unwrap();
    assert_eq!(publish_ids(&drain(&mut c, t0)).len(), 1);
    // The end of the connection frees the other: only the live PUBLISH is left to resend.
    c.connection_lost(t0);
    assert_eq!(c.in_flight(), 1);
}
