//! The telemetry reader (`EventHubConsumer`) against the in-process emulator's Event
//! Hubs-compatible endpoint over real TLS: every partition from the start with typed
//! properties and annotations from this project's device client over MQTT and AMQP, start
//! positions (sequence number, offset, enqueued time, latest), consumer groups, `$management`
//! properties, the redirect from the hub's connection string, and typed errors for bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_core::{EventHubConnectionString, Message, ServiceConnectionString};
use azure_iot_device::{ClientOptions, DeviceClient, Transport};
use azure_iot_emulator::{Emulator, EmulatorHandle, EventRoutes};
use azure_iot_service::events::annotations;
use azure_iot_service::{
    Device, ErrorKind, EventHubConsumer, EventHubConsumerOptions, EventPosition, EventStream,
    IfMatch, PropertyValue, ReceivedEvent, ServiceClient, ServiceClientOptions, TwinPatch,
};

const WAIT: Duration = Duration::from_secs(10);

async fn hub() -> EmulatorHandle {
    Emulator::builder()
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .consumer_group("dashboard")
        .start()
        .await
        .unwrap()
}

fn options(hub: &EmulatorHandle) -> EventHubConsumerOptions {
    EventHubConsumerOptions::default()
        .trusted_ca_pem(hub.ca_pem())
        .hub_amqp_port(hub.amqp_addr().port())
        .timeout(WAIT)
}

fn consumer(hub: &EmulatorHandle, options: EventHubConsumerOptions) -> EventHubConsumer {
    let cs = hub.event_hubs_connection_string("iothubowner").unwrap();
    EventHubConsumer::from_event_hub(&EventHubConnectionString::parse(cs).unwrap(), options)
        .unwrap()
}

/// A service client of `hub` with the owner policy.
fn service(hub: &EmulatorHandle) -> ServiceClient {
    ServiceClient::from_connection_string(
        hub.connection_string("iothubowner").unwrap(),
        ServiceClientOptions::default()
            .trusted_ca_pem(hub.ca_pem())
            .https_port(hub.https_addr().port())
            .request_timeout(WAIT),
    )
    .unwrap()
}

/// Registers `id` and connects it over `transport`.
async fn device(hub: &EmulatorHandle, id: &str, transport: Transport) -> DeviceClient {
    let service = service(hub);
    let created = service.create_device(&Device::new(id)).await.unwrap();
    let port = match transport {
        Transport::Amqp => hub.amqp_addr().port(),
        _ => hub.mqtt_addr().port(),
    };
    DeviceClient::from_connection_string(
        &format!(
            "HostName={};DeviceId={id};SharedAccessKey={}",
            hub.hostname(),
            created.primary_key().unwrap()
        ),
        ClientOptions::default()
            .trusted_ca_pem(hub.ca_pem())
            .transport(transport)
            .port(port)
            .operation_timeout(WAIT),
    )
    .await
    .unwrap()
}

fn message(body: &str, n: usize) -> Message {
    Message::builder(body.as_bytes().to_vec())
        .message_id(format!("msg-{n}"))
        .correlation_id(format!("corr-{n}"))
        .content_type("application/json")
        .content_encoding("utf-8")
        .property("n", n.to_string())
        .property("kind", "reading")
        .build()
        .unwrap()
}

/// The next `n` events of `stream`, failing after [`WAIT`].
async fn take(stream: &mut EventStream, n: usize) -> Vec<ReceivedEvent> {
    let mut events = Vec::new();
    while events.len() < n {
        let event = tokio::time::timeout(WAIT, stream.next_event())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events arrived", events.len()))
            .expect("the stream ended")
            .expect("an event");
        events.push(event);
    }
    events
}

/// The error that ends `stream` (a link the endpoint refused after attaching it).
async fn ending_error(mut stream: EventStream) -> azure_iot_service::Error {
    let item = tokio::time::timeout(WAIT, stream.next_event())
        .await
        .expect("the stream ends in time")
        .expect("an error item before the end");
    let err = item.expect_err("an error, not an event");
    assert!(
        stream.next_event().await.is_none(),
        "the error is the last item"
    );
    err
}

#[tokio::test]
async fn every_partition_from_the_start_with_typed_properties_over_mqtt_and_amqp() {
    let hub = hub().await;
    let mut sent = 0;
    for (i, transport) in [
        Transport::Mqtt,
        Transport::Amqp,
        Transport::Mqtt,
        Transport::Amqp,
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("ev-{i}");
        let client = device(&hub, &id, transport).await;
        client
            .send_event(message(&format!("{{\"from\":\"{id}\"}}"), i))
            .await
            .unwrap();
        sent += 1;
        let _ = client.close().await;
    }
    let reader = consumer(&hub, options(&hub));
    let properties = reader.get_event_hub_properties().await.unwrap();
    assert_eq!(properties.name, hub.event_hubs_name());
    assert_eq!(properties.partition_ids.len(), 4);

    let mut stream = reader.receive_all(EventPosition::Earliest).await.unwrap();
    let mut events = take(&mut stream, sent).await;
    // Exactly what was sent, each once: the partitions hold `sent` events in all.
    let mut stored = 0;
    for id in &properties.partition_ids {
        let p = reader.get_partition_properties(id).await.unwrap();
        if !p.is_empty {
            stored += p.last_enqueued_sequence_number - p.begin_sequence_number + 1;
        }
    }
    assert_eq!(stored, i64::try_from(sent).unwrap());
    events.sort_by_key(|e| e.device_id().map(str::to_owned));
    for (i, event) in events.iter().enumerate() {
        let id = format!("ev-{i}");
        assert_eq!(event.device_id(), Some(id.as_str()), "{event:?}");
        assert_eq!(event.body_text(), format!("{{\"from\":\"{id}\"}}"));
        assert_eq!(
            event.message_id.as_deref(),
            Some(format!("msg-{i}").as_str())
        );
        assert_eq!(
            event.correlation_id.as_deref(),
            Some(format!("corr-{i}").as_str())
        );
        assert_eq!(event.content_type.as_deref(), Some("application/json"));
        assert_eq!(event.content_encoding.as_deref(), Some("utf-8"));
        assert_eq!(
            event.property("n"),
            Some(&PropertyValue::String(i.to_string()))
        );
        assert_eq!(
            event.property("kind"),
            Some(&PropertyValue::String("reading".into()))
        );
        assert_eq!(event.message_source(), Some("Telemetry"));
        assert!(properties.partition_ids.contains(&event.partition_id));
        // Event Hubs' annotation types: long, string, timestamp.
        assert!(matches!(
            event.annotation(annotations::SEQUENCE_NUMBER),
            Some(PropertyValue::Long(_))
        ));
        assert!(matches!(
            event.annotation(annotations::OFFSET),
            Some(PropertyValue::String(_))
        ));
        assert!(matches!(
            event.annotation(annotations::ENQUEUED_TIME),
            Some(PropertyValue::Timestamp(_))
        ));
        assert!(event.enqueued_time.is_some() && event.offset.is_some());
        assert!(
            event.hub_enqueued_time().is_some(),
            "{:?}",
            event.annotations
        );
    }
}

#[tokio::test]
async fn start_positions_sequence_number_offset_enqueued_time_and_latest() {
    let hub = hub().await;
    let client = device(&hub, "pos", Transport::Mqtt).await;
    for i in 0..5 {
        client.send_event(message("x", i)).await.unwrap();
    }
    let reader = consumer(&hub, options(&hub));
    let all = take(
        &mut reader.receive_all(EventPosition::Earliest).await.unwrap(),
        5,
    )
    .await;
    let partition = all[0].partition_id.clone();
    assert!(
        all.iter().all(|e| e.partition_id == partition),
        "one device, one partition"
    );
    let numbers: Vec<i64> = all.iter().map(|e| e.sequence_number).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    let ids = |events: &[ReceivedEvent]| -> Vec<Option<String>> {
        events.iter().map(|e| e.message_id.clone()).collect()
    };

    let mut after_seq = reader
        .receive_partition(&partition, EventPosition::after_sequence_number(numbers[1]))
        .await
        .unwrap();
    assert_eq!(ids(&take(&mut after_seq, 3).await), ids(&all[2..]));

    let offset = all[2].offset.clone().unwrap();
    let mut after_offset = reader
        .receive_partition(
            &partition,
            EventPosition::Offset {
                offset: offset.clone(),
                inclusive: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&take(&mut after_offset, 2).await), ids(&all[3..]));
    let mut at_offset = reader
        .receive_partition(
            &partition,
            EventPosition::Offset {
                offset,
                inclusive: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&take(&mut at_offset, 3).await), ids(&all[2..]));

    let first = all[0].enqueued_time.unwrap();
    let mut by_time = reader
        .receive_partition(
            &partition,
            EventPosition::EnqueuedTime(first - Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert_eq!(ids(&take(&mut by_time, 5).await), ids(&all));

    // Latest: only what is sent after the receiver attached.
    let mut latest = reader.receive_all(EventPosition::Latest).await.unwrap();
    client.send_event(message("new", 5)).await.unwrap();
    let new = take(&mut latest, 1).await;
    assert_eq!(new[0].message_id.as_deref(), Some("msg-5"));
    assert_eq!(new[0].sequence_number, numbers[4] + 1);
    // The readers above saw nothing else before it: the next event is the new one.
    assert_eq!(ids(&take(&mut after_seq, 1).await), ids(&new));
    // The partition's properties agree.
    let p = reader.get_partition_properties(&partition).await.unwrap();
    assert_eq!(p.id, partition);
    assert_eq!(p.last_enqueued_sequence_number, numbers[4] + 1);
    assert!(!p.is_empty);
}

#[tokio::test]
async fn a_configured_consumer_group_reads_and_an_unknown_one_is_not_found() {
    let hub = hub().await;
    let client = device(&hub, "cg", Transport::Mqtt).await;
    client
        .send_event(message("for the dashboard", 0))
        .await
        .unwrap();
    let reader = consumer(&hub, options(&hub).consumer_group("dashboard"));
    assert_eq!(reader.consumer_group(), "dashboard");
    let got = take(
        &mut reader.receive_all(EventPosition::Earliest).await.unwrap(),
        1,
    )
    .await;
    assert_eq!(got[0].body_text(), "for the dashboard");

    let unknown = consumer(&hub, options(&hub).consumer_group("nobody"));
    let err = ending_error(
        unknown
            .receive_partition("0", EventPosition::Earliest)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = EventHubConsumer::from_event_hub(
        &EventHubConnectionString::parse(hub.event_hubs_connection_string("iothubowner").unwrap())
            .unwrap(),
        options(&hub).consumer_group("a/b"),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test]
async fn the_hub_connection_string_is_redirected_to_the_endpoint() {
    let hub = hub().await;
    let client = device(&hub, "redir", Transport::Amqp).await;
    client.send_event(message("via redirect", 0)).await.unwrap();
    let cs = ServiceConnectionString::parse(hub.connection_string("service").unwrap()).unwrap();
    let reader = EventHubConsumer::from_iot_hub(&cs, options(&hub))
        .await
        .unwrap();
    assert_eq!(reader.event_hub_name(), hub.event_hubs_name());
    let got = take(
        &mut reader.receive_all(EventPosition::Earliest).await.unwrap(),
        1,
    )
    .await;
    assert_eq!(got[0].device_id(), Some("redir"));
    // The same through the string form that picks the kind of connection string.
    let again = EventHubConsumer::from_connection_string(
        hub.connection_string("service").unwrap(),
        options(&hub),
    )
    .await
    .unwrap();
    assert_eq!(again.event_hub_name(), hub.event_hubs_name());
}

#[tokio::test]
async fn bad_input_gives_typed_errors() {
    let hub = hub().await;
    let reader = consumer(&hub, options(&hub));
    let err = ending_error(
        reader
            .receive_partition("99", EventPosition::Earliest)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = reader.get_partition_properties("99").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // A wrong key: refused at the endpoint, and by the hub before any redirect.
    let real =
        EventHubConnectionString::parse(hub.event_hubs_connection_string("iothubowner").unwrap())
            .unwrap();
    let wrong_key =
        azure_iot_core::SharedAccessKey::from_base64("d3Jvbmcta2V5LXdyb25nLWtleQ==").unwrap();
    let wrong = EventHubConnectionString::new(
        real.host(),
        real.port(),
        real.entity_path(),
        real.key_name(),
        wrong_key.clone(),
    );
    let err = EventHubConsumer::from_event_hub(&wrong, options(&hub))
        .unwrap()
        .receive_all(EventPosition::Earliest)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(!err.to_string().contains("d3Jvbmc"), "{err}");
    let hub_cs = ServiceConnectionString::new(hub.hostname(), "iothubowner", wrong_key);
    let err = EventHubConsumer::from_iot_hub(&hub_cs, options(&hub))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");

    // A sequence number beyond the end of the partition.
    let err = ending_error(
        reader
            .receive_partition(
                "0",
                EventPosition::SequenceNumber {
                    sequence_number: 1_000_000,
                    inclusive: true,
                },
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");
}

/// A TCP forwarder to `target` whose connections can be cut (a network drop).
struct Cutter {
    port: u16,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl Cutter {
    async fn to(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let list = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let Ok(mut up) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let task = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                });
                list.lock().unwrap().push(task);
            }
        });
        Self {
            port,
            connections,
            _accept: accept,
        }
    }

    /// Drops every connection made so far.
    fn cut(&self) -> usize {
        let tasks: Vec<_> = self.connections.lock().unwrap().drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        tasks.len()
    }
}

#[tokio::test]
async fn a_dropped_connection_is_reopened_and_reading_resumes_after_the_last_event() {
    let hub = hub().await;
    let client = device(&hub, "drop", Transport::Mqtt).await;
    for i in 0..3 {
        client.send_event(message("before", i)).await.unwrap();
    }
    let cutter = Cutter::to(hub.amqp_addr()).await;
    let real =
        EventHubConnectionString::parse(hub.event_hubs_connection_string("iothubowner").unwrap())
            .unwrap();
    let via_proxy = EventHubConnectionString::new(
        real.host(),
        Some(cutter.port),
        real.entity_path(),
        real.key_name(),
        real.key().clone(),
    );
    let reconnects = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = reconnects.clone();
    let reader = EventHubConsumer::from_event_hub(
        &via_proxy,
        options(&hub).retry_policy(move |a: &azure_iot_core::retry::RetryAttempt| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (a.attempt < 5).then_some(Duration::from_millis(10))
        }),
    )
    .unwrap();
    let mut stream = reader.receive_all(EventPosition::Earliest).await.unwrap();
    let before = take(&mut stream, 3).await;
    assert_eq!(cutter.cut(), 1, "one connection carried the reader");
    for i in 3..5 {
        client.send_event(message("after", i)).await.unwrap();
    }
    let after = take(&mut stream, 2).await;
    let ids: Vec<_> = before
        .iter()
        .chain(&after)
        .map(|e| e.message_id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["msg-0", "msg-1", "msg-2", "msg-3", "msg-4"]);
    assert!(reconnects.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

/// Application properties an AMQP device sends with non-string types arrive with those types.
#[tokio::test]
async fn amqp_application_property_types_arrive_as_sent() {
    use fe2o3_amqp::sasl_profile::SaslProfile;
    use fe2o3_amqp::{Connection, Sender, Session};
    use fe2o3_amqp_types::messaging::{
        AmqpValue, ApplicationProperties, Body, Message as AmqpMessage, Properties,
    };
    use fe2o3_amqp_types::primitives::{SimpleValue, Value};

    let hub = hub().await;
    let ep = azure_iot_test::HubEndpoint::of(&hub);
    let key = azure_iot_test::RestClient::new(&ep, "iothubowner")
        .register_device("typed")
        .await;
    let token = azure_iot_test::device_token(&ep, "typed", None, &key, Duration::from_secs(600));
    let stream = azure_iot_test::tls_connect(&ep, ep.amqp_addr)
        .await
        .unwrap();
    let mut connection = Connection::builder()
        .container_id("typed-device")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Plain {
            username: "typed@sas.localhost".into(),
            password: token,
        })
        .open_with_stream(stream)
        .await
        .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut link = Sender::attach(&mut session, "telemetry", "/devices/typed/messages/events")
        .await
        .unwrap();
    let message: AmqpMessage<Body<Value>> = AmqpMessage::builder()
        .properties(
            Properties::builder()
                .message_id("typed-1".to_owned())
                .build(),
        )
        .application_properties(
            ApplicationProperties::builder()
                .insert("count", SimpleValue::Int(42))
                .insert("big", SimpleValue::Long(-7))
                .insert("ok", SimpleValue::Bool(true))
                .insert("ratio", SimpleValue::from(0.5f64))
                .insert("name", SimpleValue::String("x".into()))
                .build(),
        )
        .body(Body::Value(AmqpValue(Value::String("{}".into()))))
        .build();
    link.send(message).await.unwrap();

    let reader = consumer(&hub, options(&hub));
    let got = take(
        &mut reader.receive_all(EventPosition::Earliest).await.unwrap(),
        1,
    )
    .await;
    let event = &got[0];
    assert_eq!(event.device_id(), Some("typed"));
    assert_eq!(event.property("count"), Some(&PropertyValue::Int(42)));
    assert_eq!(event.property("big"), Some(&PropertyValue::Long(-7)));
    assert_eq!(event.property("ok"), Some(&PropertyValue::Bool(true)));
    assert_eq!(event.property("ratio"), Some(&PropertyValue::Double(0.5)));
    assert_eq!(
        event.property("name"),
        Some(&PropertyValue::String("x".into()))
    );
}

/// A receiver with a higher owner level takes the partition over; the first one's stream
/// ends with `Closed` (the endpoint's `amqp:link:stolen`) and is not reopened.
#[tokio::test]
async fn a_higher_owner_level_takes_the_partition_over() {
    let hub = hub().await;
    let low = consumer(&hub, options(&hub).owner_level(1));
    let first = low
        .receive_partition("0", EventPosition::Earliest)
        .await
        .unwrap();
    let high = consumer(&hub, options(&hub).owner_level(2));
    let _second = high
        .receive_partition("0", EventPosition::Earliest)
        .await
        .unwrap();
    let err = ending_error(first).await;
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
}

#[tokio::test]
async fn routed_hub_notifications_arrive_with_their_source_and_properties() {
    let hub = Emulator::builder()
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .event_routes(EventRoutes::all())
        .start()
        .await
        .unwrap();
    // Created (lifecycle), connected (connection state), two twin writes (twin change).
    let client = device(&hub, "notified", Transport::Mqtt).await;
    client
        .update_reported_properties(&serde_json::json!({"temp": 21}))
        .await
        .unwrap();
    let patch = TwinPatch::new()
        .desired(serde_json::json!({"speed": 5}))
        .unwrap();
    service(&hub)
        .update_twin("notified", &patch, IfMatch::Any)
        .await
        .unwrap();
    let reader = consumer(&hub, options(&hub));
    let mut stream = reader.receive_all(EventPosition::Earliest).await.unwrap();
    let mut events = take(&mut stream, 4).await;
    // One device: one partition, in the hub's order.
    assert!(
        events
            .iter()
            .all(|e| e.partition_id == events[0].partition_id)
    );
    events.sort_by_key(|e| e.sequence_number);
    let text = |e: &ReceivedEvent, name: &str| match e.property(name) {
        Some(PropertyValue::String(s)) => s.clone(),
        other => panic!("{name} is {other:?}"),
    };
    let seen: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.message_source().unwrap_or_default().to_owned(),
                text(e, "opType"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "deviceLifecycleEvents".to_owned(),
                "createDeviceIdentity".to_owned()
            ),
            (
                "deviceConnectionStateEvents".to_owned(),
                "deviceConnected".to_owned()
            ),
            ("twinChangeEvents".to_owned(), "updateTwin".to_owned()),
            ("twinChangeEvents".to_owned(), "updateTwin".to_owned()),
        ]
    );
    let schemas = [
        "deviceLifecycleNotification",
        "deviceConnectionStateNotification",
        "twinChangeNotification",
        "twinChangeNotification",
    ];
    for (event, schema) in events.iter().zip(schemas) {
        assert_eq!(event.device_id(), Some("notified"));
        assert_eq!(text(event, "iothub-message-schema"), schema);
        assert_eq!(text(event, "hubName"), hub.event_hubs_name());
        assert_eq!(text(event, "deviceId"), "notified");
        assert!(!text(event, "operationTimestamp").is_empty());
        assert_eq!(event.user_id.as_deref(), Some(hub.event_hubs_name()));
        assert_eq!(event.content_type.as_deref(), Some("application/json"));
        assert_eq!(event.content_encoding.as_deref(), Some("utf-8"));
        assert!(event.correlation_id.is_some());
        assert!(event.hub_enqueued_time().is_some());
        assert!(event.annotation("iothub-connection-auth-method").is_none());
    }
    let reported: serde_json::Value = serde_json::from_slice(&events[2].body).unwrap();
    assert_eq!(reported["properties"]["reported"]["temp"], 21);
    let desired: serde_json::Value = serde_json::from_slice(&events[3].body).unwrap();
    assert_eq!(desired["properties"]["desired"]["speed"], 5);
    let created: serde_json::Value = serde_json::from_slice(&events[0].body).unwrap();
    assert_eq!(created["deviceId"], "notified");
    let _ = client.close().await;
}
