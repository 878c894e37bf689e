//! The Event Hubs-compatible endpoint over real TLS with an independent AMQP 1.0 client
//! (fe2o3-amqp): every consumer address form, every selector-filter form, the annotations
//! IoT Hub stamps with their AMQP types, live tail, epochs, `$management`, the hub-policy
//! redirect, CBS and SASL PLAIN logins, WebSockets, and bad input refused with Event Hubs'
//! errors while the emulator carries on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_core::{SasToken, ServiceConnectionString, SharedAccessKey};
use azure_iot_emulator::{Emulator, EmulatorHandle};
use azure_iot_test::{DeviceHttp, HubEndpoint, RestClient, emulator};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use fe2o3_amqp_types::definitions::{Fields, SenderSettleMode};
use fe2o3_amqp_types::messaging::annotations::OwnedKey;
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, Properties, Source,
};
use fe2o3_amqp_types::primitives::{SimpleValue, Symbol, Value};
use reqwest::Method;
use serde_amqp::described::Described;
use serde_amqp::descriptor::Descriptor;

const SELECTOR: &str = "apache.org:selector-filter:string";

async fn tls(hub: &HubEndpoint) -> azure_iot_test::TlsClientStream {
    azure_iot_test::tls_connect(hub, hub.amqp_addr)
        .await
        .unwrap()
}

fn key_of(hub: &EmulatorHandle, policy: &str) -> SharedAccessKey {
    ServiceConnectionString::parse(hub.connection_string(policy).unwrap())
        .unwrap()
        .key()
        .clone()
}

/// A connection logged in the way Event Hubs clients with a key do: SASL PLAIN, the policy
/// name and its key.
async fn plain(hub: &EmulatorHandle, policy: &str) -> (ConnectionHandle<()>, SessionHandle<()>) {
    let ep = HubEndpoint::of(hub);
    let mut connection = Connection::builder()
        .container_id("eh-consumer")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Plain {
            username: policy.to_owned(),
            password: key_of(hub, policy).to_base64(),
        })
        .open_with_stream(tls(&ep).await)
        .await
        .unwrap();
    let session = Session::begin(&mut connection).await.unwrap();
    (connection, session)
}

/// Registers `device` and sends it `count` messages over HTTPS (`n` property = 0, 1, …);
/// returns the partition its messages went to.
async fn send(hub: &EmulatorHandle, device: &str, count: usize) -> u32 {
    let ep = HubEndpoint::of(hub);
    let api = RestClient::new(&ep, "iothubowner");
    let reply = api.get(&format!("/devices/{device}")).await;
    let key = match reply.body["authentication"]["symmetricKey"]["primaryKey"].as_str() {
        Some(key) => key.to_owned(),
        None => api.register_device(device).await,
    };
    let http = DeviceHttp::new(&ep, device, None, &key);
    for n in 0..count {
        let r = http
            .request(Method::POST, &format!("/devices/{device}/messages/events"))
            .header("IoTHub-MessageId", format!("m{n}"))
            .header("iothub-correlationid", "corr")
            .header("iothub-contenttype", "application/json")
            .header("iothub-contentencoding", "utf-8")
            .header("iothub-app-n", n.to_string())
            .body(format!("{{\"n\":{n}}}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let logged = hub.telemetry(0, 1000).await.unwrap();
    logged
        .iter()
        .find(|e| e.device_id == device)
        .expect("the device's message is logged")
        .partition
}

fn address(hub: &EmulatorHandle, form: usize, group: &str, partition: u32) -> String {
    let entity = hub.event_hubs_name();
    match form {
        0 => format!("{entity}/ConsumerGroups/{group}/Partitions/{partition}"),
        1 => format!("/{entity}/ConsumerGroups/{group}/Partitions/{partition}"),
        _ => format!(
            "amqps://localhost:{}/{entity}/ConsumerGroups/{group}/Partitions/{partition}",
            hub.amqp_addr().port()
        ),
    }
}

/// A consumer on `address` from `filter` (a selector expression; `None`: no filter), with an
/// epoch if given. The descriptor varies as it does between SDKs.
async fn consumer(
    session: &mut SessionHandle<()>,
    name: &str,
    address: &str,
    filter: Option<&str>,
    epoch: Option<i64>,
) -> Receiver {
    let mut source = Source::builder().address(address.to_owned());
    if let Some(expression) = filter {
        let descriptor = match name.len() % 3 {
            0 => Descriptor::Name(Symbol::from(SELECTOR)),
            1 => Descriptor::Code(0x0000_0137_0000_000A),
            _ => Descriptor::Code(0x0000_468C_0000_0004),
        };
        source = source.add_to_filter(
            Symbol::from(SELECTOR),
            Described {
                descriptor,
                value: Value::String(expression.to_owned()),
            },
        );
    }
    let mut builder = Receiver::builder()
        .name(name)
        .source(source.build())
        .target("receiver-target");
    if let Some(epoch) = epoch {
        let mut properties = Fields::default();
        properties.insert(Symbol::from("com.microsoft:epoch"), Value::Long(epoch));
        builder = builder.properties(properties);
    }
    builder.attach(session).await.unwrap()
}

async fn take(receiver: &mut Receiver, n: usize) -> Vec<Message<Body<Value>>> {
    let mut got = Vec::new();
    for _ in 0..n {
        let delivery =
            tokio::time::timeout(Duration::from_secs(10), receiver.recv::<Body<Value>>())
                .await
                .expect("an event within 10 s")
                .unwrap();
        receiver.accept(&delivery).await.unwrap();
        got.push(delivery.into_message());
    }
    got
}

/// The error the link is detached with, as text (it delivers nothing).
async fn refusal(receiver: &mut Receiver) -> String {
    let error = tokio::time::timeout(Duration::from_secs(10), receiver.recv::<Body<Value>>())
        .await
        .expect("the endpoint detaches the link")
        .expect_err("a refused link delivers nothing");
    format!("{error:?}")
}

fn annotation<'m>(message: &'m Message<Body<Value>>, name: &str) -> &'m Value {
    message
        .message_annotations
        .as_ref()
        .unwrap()
        .get(&OwnedKey::Symbol(Symbol::from(name)))
        .unwrap_or_else(|| panic!("annotation {name}"))
}

fn sequence(message: &Message<Body<Value>>) -> i64 {
    match annotation(message, "x-opt-sequence-number") {
        Value::Long(n) => *n,
        other => panic!("x-opt-sequence-number is a long, not {other:?}"),
    }
}

fn offset(message: &Message<Body<Value>>) -> String {
    match annotation(message, "x-opt-offset") {
        Value::String(s) => s.clone(),
        other => panic!("x-opt-offset is a string, not {other:?}"),
    }
}

#[tokio::test]
async fn every_address_form_reads_the_partition_with_iothub_annotations() {
    let hub = emulator().await;
    let partition = send(&hub, "dev1", 3).await;
    let (_connection, mut session) = plain(&hub, "service").await;
    for form in 0..3 {
        let address = address(&hub, form, "$Default", partition);
        let mut receiver =
            consumer(&mut session, &format!("form{form}"), &address, None, None).await;
        let events = take(&mut receiver, 3).await;
        for (n, event) in events.iter().enumerate() {
            assert_eq!(sequence(event), n as i64);
            assert!(matches!(
                annotation(event, "x-opt-enqueued-time"),
                Value::Timestamp(_)
            ));
            assert!(matches!(
                annotation(event, "iothub-enqueuedtime"),
                Value::Timestamp(_)
            ));
            assert_eq!(
                annotation(event, "iothub-connection-device-id"),
                &Value::String("dev1".into())
            );
            assert_eq!(
                annotation(event, "iothub-message-source"),
                &Value::String("Telemetry".into())
            );
            let Value::String(auth) = annotation(event, "iothub-connection-auth-method") else {
                panic!("auth method text")
            };
            let auth: serde_json::Value = serde_json::from_str(auth).unwrap();
            assert_eq!(auth["type"], "sas");
            assert!(matches!(
                annotation(event, "iothub-connection-auth-generation-id"),
                Value::String(_)
            ));
            let properties = event.properties.as_ref().unwrap();
            assert_eq!(
                properties.message_id,
                Some(fe2o3_amqp_types::messaging::MessageId::String(format!(
                    "m{n}"
                )))
            );
            assert_eq!(
                properties.content_type.as_ref().map(|s| s.as_str()),
                Some("application/json")
            );
            assert_eq!(
                event.application_properties.as_ref().unwrap().get("n"),
                Some(&SimpleValue::String(n.to_string()))
            );
            let Body::Data(data) = &event.body else {
                panic!("a data body")
            };
            assert_eq!(
                data.iter().next().unwrap().0.as_slice(),
                format!("{{\"n\":{n}}}").as_bytes()
            );
        }
        let offsets: Vec<i64> = events.iter().map(|e| offset(e).parse().unwrap()).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
        receiver.close().await.unwrap();
    }
}

/// Events go out settled, as Event Hubs sends them: a consumer that asks for unsettled
/// deliveries and never settles (the official Python consumer) still gets every event, not
/// the first 256 of each partition.
#[tokio::test]
async fn a_consumer_that_never_settles_gets_every_event() {
    const EVENTS: usize = 300;
    let hub = emulator().await;
    let partition = send(&hub, "dev-unsettled", EVENTS).await;
    let (_connection, mut session) = plain(&hub, "service").await;
    let address = address(&hub, 0, "$Default", partition);
    let mut receiver = Receiver::builder()
        .name("never-settles")
        .source(address)
        .target("receiver-target")
        .sender_settle_mode(SenderSettleMode::Unsettled)
        .credit_mode(CreditMode::Manual)
        .attach(&mut session)
        .await
        .unwrap();
    receiver.set_credit(EVENTS as u32 + 100).await.unwrap();
    for n in 0..EVENTS {
        let delivery =
            tokio::time::timeout(Duration::from_secs(10), receiver.recv::<Body<Value>>())
                .await
                .unwrap_or_else(|_| panic!("event {n} of {EVENTS} within 10 s"))
                .unwrap();
        assert_eq!(sequence(delivery.message()), n as i64);
    }
}

#[tokio::test]
async fn selector_filters_start_where_asked_and_new_events_arrive_live() {
    let hub = emulator().await;
    let partition = send(&hub, "dev1", 3).await;
    let (_connection, mut session) = plain(&hub, "service").await;
    let at = address(&hub, 2, "$Default", partition);
    let all = take(&mut consumer(&mut session, "all", &at, None, None).await, 3).await;
    let second_offset = offset(&all[1]);
    let Value::Timestamp(first_time) = annotation(&all[0], "x-opt-enqueued-time") else {
        panic!()
    };
    let first_ms = first_time.milliseconds();
    let cases = [
        ("amqp.annotation.x-opt-offset > '-1'".to_owned(), 0),
        ("amqp.annotation.x-opt-sequence-number > '0'".to_owned(), 1),
        ("amqp.annotation.x-opt-sequence-number >= 1".to_owned(), 1),
        (
            format!("amqp.annotation.x-opt-offset >= '{second_offset}'"),
            1,
        ),
        (
            format!("amqp.annotation.x-opt-offset > '{second_offset}'"),
            2,
        ),
        (
            format!("amqp.annotation.x-opt-enqueued-time >= '{first_ms}'"),
            0,
        ),
    ];
    for (i, (filter, first)) in cases.iter().enumerate() {
        let name = format!("case{i}{}", "x".repeat(i));
        let mut receiver = consumer(&mut session, &name, &at, Some(filter), None).await;
        let got = take(&mut receiver, 3 - first).await;
        assert_eq!(sequence(&got[0]), *first as i64, "{filter}");
        receiver.close().await.unwrap();
    }
    // The end of the stream: nothing old, then what is sent after, as it is committed.
    let mut latest = consumer(
        &mut session,
        "latest",
        &at,
        Some("amqp.annotation.x-opt-offset > '@latest'"),
        None,
    )
    .await;
    let mut live = consumer(&mut session, "live", &at, None, None).await;
    take(&mut live, 3).await;
    send(&hub, "dev1", 1).await;
    let got = take(&mut latest, 1).await;
    assert_eq!(sequence(&got[0]), 3);
    assert_eq!(sequence(&take(&mut live, 1).await[0]), 3);
}

#[tokio::test]
async fn a_higher_epoch_takes_the_partition() {
    let hub = emulator().await;
    let partition = send(&hub, "dev1", 1).await;
    let (_connection, mut session) = plain(&hub, "service").await;
    let at = address(&hub, 1, "$Default", partition);
    let mut plain_reader = consumer(&mut session, "plain", &at, None, None).await;
    take(&mut plain_reader, 1).await;
    let mut first = consumer(&mut session, "epoch1", &at, None, Some(1)).await;
    take(&mut first, 1).await;
    assert!(refusal(&mut plain_reader).await.contains("Stolen"));
    let mut second = consumer(&mut session, "epoch2", &at, None, Some(2)).await;
    take(&mut second, 1).await;
    assert!(refusal(&mut first).await.contains("Stolen"));
    let mut lower = consumer(&mut session, "epoch0", &at, None, Some(0)).await;
    assert!(refusal(&mut lower).await.contains("Stolen"));
    let mut none = consumer(&mut session, "none", &at, None, None).await;
    assert!(refusal(&mut none).await.contains("Stolen"));
    // Another consumer group is not concerned.
    let other = address(&hub, 1, "$default", (partition + 1) % 4);
    let _reader = consumer(&mut session, "other", &other, None, None).await;
    send(&hub, "dev1", 1).await;
    assert_eq!(sequence(&take(&mut second, 1).await[0]), 1);
}

/// A `$management` READ request; the answer's status code and body.
async fn read(
    sender: &mut Sender,
    receiver: &mut Receiver,
    kind: &str,
    name: &str,
    partition: Option<&str>,
) -> (i32, Value) {
    let mut application = ApplicationProperties::builder()
        .insert("operation", "READ")
        .insert("type", kind)
        .insert("name", name);
    if let Some(p) = partition {
        application = application.insert("partition", p);
    }
    let request = Message::builder()
        .properties(
            Properties::builder()
                .message_id(format!("{kind}-{name}-{partition:?}"))
                .reply_to("mgmt-answers")
                .build(),
        )
        .application_properties(application.build())
        .body(Body::Value(AmqpValue(Value::List(vec![]))))
        .build();
    sender.send(request).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), receiver.recv::<Body<Value>>())
        .await
        .unwrap()
        .unwrap();
    receiver.accept(&answer).await.unwrap();
    let message = answer.into_message();
    assert_eq!(
        message.properties.unwrap().correlation_id,
        Some(fe2o3_amqp_types::messaging::MessageId::String(format!(
            "{kind}-{name}-{partition:?}"
        )))
    );
    let status = match message.application_properties.unwrap().get("status-code") {
        Some(SimpleValue::Int(code)) => *code,
        other => panic!("status-code {other:?}"),
    };
    let Body::Value(AmqpValue(body)) = message.body else {
        panic!("an amqp-value body")
    };
    (status, body)
}

fn entry<'v>(map: &'v Value, key: &str) -> &'v Value {
    let Value::Map(map) = map else {
        panic!("a map")
    };
    map.get(&Value::String(key.into()))
        .unwrap_or_else(|| panic!("{key}"))
}

#[tokio::test]
async fn management_reads_the_entity_and_its_partitions() {
    let hub = emulator().await;
    let partition = send(&hub, "dev1", 2).await;
    let (_connection, mut session) = plain(&hub, "iothubowner").await;
    let mut sender = Sender::attach(&mut session, "mgmt-requests", "$management")
        .await
        .unwrap();
    let mut receiver = Receiver::builder()
        .name("mgmt-answers")
        .source("$management")
        .target("mgmt-answers")
        .attach(&mut session)
        .await
        .unwrap();
    let name = hub.event_hubs_name().to_owned();
    let (status, body) = read(
        &mut sender,
        &mut receiver,
        "com.microsoft:eventhub",
        &name,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(entry(&body, "name"), &Value::String(name.clone()));
    let Value::Array(ids) = entry(&body, "partition_ids") else {
        panic!("partition_ids is an array")
    };
    assert_eq!(ids.0.len(), 4);
    assert!(matches!(entry(&body, "created_at"), Value::Timestamp(_)));

    let p = partition.to_string();
    let (status, body) = read(
        &mut sender,
        &mut receiver,
        "com.microsoft:partition",
        &name,
        Some(&p),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        entry(&body, "last_enqueued_sequence_number"),
        &Value::Long(1)
    );
    assert_eq!(entry(&body, "begin_sequence_number"), &Value::Long(0));
    assert!(matches!(
        entry(&body, "last_enqueued_offset"),
        Value::String(_)
    ));
    assert_eq!(entry(&body, "is_partition_empty"), &Value::Bool(false));
    assert!(matches!(
        entry(&body, "last_enqueued_time_utc"),
        Value::Timestamp(_)
    ));

    let empty = ((partition + 1) % 4).to_string();
    let (_, body) = read(
        &mut sender,
        &mut receiver,
        "com.microsoft:partition",
        &name,
        Some(&empty),
    )
    .await;
    assert_eq!(entry(&body, "is_partition_empty"), &Value::Bool(true));
    assert_eq!(
        entry(&body, "last_enqueued_sequence_number"),
        &Value::Long(-1)
    );

    let (status, _) = read(
        &mut sender,
        &mut receiver,
        "com.microsoft:partition",
        &name,
        Some("9"),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = read(
        &mut sender,
        &mut receiver,
        "com.microsoft:eventhub",
        "other",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = read(
        &mut sender,
        &mut receiver,
        "com.microsoft:queue",
        &name,
        None,
    )
    .await;
    assert_eq!(status, 400);
}

/// The hub's own endpoint answers an Event Hubs client that logged in with a hub policy with
/// `amqp:link:redirect` to the Event Hubs address, for `$management` and for a partition.
#[tokio::test]
async fn hub_policy_logins_are_redirected_to_the_endpoint() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let token = SasToken::generate_with_ttl(
        &azure_iot_core::ResourceUri::custom(format!("{}/messages/events", hub.hostname())),
        &key_of(&hub, "service"),
        Some("service"),
        Duration::from_secs(300),
    );
    let mut connection = Connection::builder()
        .container_id("iothub-style")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Plain {
            username: format!("service@sas.root.{}", hub.event_hubs_name()),
            password: token.secret().to_owned(),
        })
        .open_with_stream(tls(&ep).await)
        .await
        .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let port = hub.amqp_addr().port();
    for (address, rest) in [
        (
            format!("amqps://{}/messages/events/$management", hub.hostname()),
            "$management".to_owned(),
        ),
        (
            "/messages/events/ConsumerGroups/$Default/Partitions/1".to_owned(),
            "ConsumerGroups/$Default/Partitions/1".to_owned(),
        ),
    ] {
        let mut receiver =
            Receiver::attach(&mut session, format!("redirect-{rest}"), address.as_str())
                .await
                .unwrap();
        let error = refusal(&mut receiver).await;
        assert!(error.contains("Redirect"), "{error}");
        let want = format!("amqps://localhost:{port}/{}/{rest}", hub.event_hubs_name());
        assert!(error.contains(&want), "{error} names {want}");
    }
}

/// An Event Hubs SAS token (signed with the key's text, as Service Bus does) for `audience`.
fn eh_token(hub: &EmulatorHandle, policy: &str, audience: &str) -> String {
    let text_key =
        SharedAccessKey::from_bytes(key_of(hub, policy).to_base64().into_bytes()).unwrap();
    SasToken::generate_with_ttl(
        &azure_iot_core::ResourceUri::custom(audience),
        &text_key,
        Some(policy),
        Duration::from_secs(600),
    )
    .secret()
    .to_owned()
}

/// Puts `token` for `audience` on `$cbs`; the answer's status code.
async fn put_token(session: &mut SessionHandle<()>, audience: &str, token: &str) -> i32 {
    let mut requests = Sender::attach(session, format!("cbs-s-{audience}"), "$cbs")
        .await
        .unwrap();
    let mut answers = Receiver::attach(session, format!("cbs-r-{audience}"), "$cbs")
        .await
        .unwrap();
    let request = Message::builder()
        .properties(Properties::builder().message_id(1u64).build())
        .application_properties(
            ApplicationProperties::builder()
                .insert("operation", "put-token")
                .insert("type", "servicebus.windows.net:sastoken")
                .insert("name", audience)
                .build(),
        )
        .body(Body::Value(AmqpValue(Value::String(token.to_owned()))))
        .build();
    requests.send(request).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), answers.recv::<Body<Value>>())
        .await
        .unwrap()
        .unwrap();
    answers.accept(&answer).await.unwrap();
    requests.close().await.unwrap();
    answers.close().await.unwrap();
    match answer
        .into_message()
        .application_properties
        .unwrap()
        .get("status-code")
    {
        Some(SimpleValue::Int(code)) => *code,
        other => panic!("status-code {other:?}"),
    }
}

/// CBS with the audiences the SDKs use (Python `sb://host/eh`, JS `sb://host/eh/ConsumerGroups/…`,
/// .NET `amqps://…`), over TLS and over WebSockets at `/$servicebus/websocket`.
#[tokio::test]
async fn cbs_logins_in_every_sdk_form_over_tls_and_websockets() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let partition = send(&hub, "dev1", 1).await;
    let entity = hub.event_hubs_name().to_owned();
    let port = hub.amqp_addr().port();
    let audiences = [
        format!("sb://localhost:{port}/{entity}"),
        format!("sb://localhost:{port}/{entity}/ConsumerGroups/$Default/Partitions/{partition}"),
        format!("amqps://localhost:{port}/{entity}/ConsumerGroups/$Default/Partitions/{partition}"),
    ];
    for (i, audience) in audiences.iter().enumerate() {
        let connection = if i == 2 {
            let ws = azure_iot_test::websocket_stream(
                &ep,
                "/$servicebus/websocket",
                "AMQPWSB10",
                ep.tls_config(),
            )
            .await;
            Connection::builder()
                .container_id(format!("cbs-{i}"))
                .hostname("localhost")
                .open_with_stream(ws)
                .await
        } else {
            Connection::builder()
                .container_id(format!("cbs-{i}"))
                .hostname("localhost")
                .open_with_stream(tls(&ep).await)
                .await
        };
        let mut connection = connection.unwrap();
        let mut session = Session::begin(&mut connection).await.unwrap();
        // Without a token, the consumer is refused.
        let at = address(&hub, i, "$Default", partition);
        let mut early = consumer(&mut session, "early", &at, None, None).await;
        assert!(refusal(&mut early).await.contains("UnauthorizedAccess"));
        // A token signed with another policy's key, or of a policy without ServiceConnect,
        // is refused.
        let forged = eh_token(&hub, "service", audience).replace("skn=service", "skn=iothubowner");
        assert_eq!(put_token(&mut session, audience, &forged).await, 401);
        let registry = eh_token(&hub, "registryRead", audience);
        assert_eq!(
            put_token(&mut session, audience, &registry).await,
            401,
            "no ServiceConnect"
        );
        assert_eq!(
            put_token(&mut session, audience, &eh_token(&hub, "service", audience)).await,
            200
        );
        let mut receiver = consumer(&mut session, "after", &at, None, None).await;
        assert_eq!(sequence(&take(&mut receiver, 1).await[0]), 0);
    }
}

#[tokio::test]
async fn bad_input_gets_event_hubs_errors_and_changes_nothing() {
    let hub = Emulator::builder()
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .consumer_group("analytics")
        .start()
        .await
        .unwrap();
    assert_eq!(hub.event_hubs_consumer_groups(), ["$Default", "analytics"]);
    let partition = send(&hub, "dev1", 2).await;
    let (_connection, mut session) = plain(&hub, "service").await;
    let entity = hub.event_hubs_name().to_owned();
    let cases = [
        (
            format!("{entity}/ConsumerGroups/$Default/Partitions/9"),
            None,
            "NotFound",
        ),
        (
            format!("{entity}/ConsumerGroups/$Default/Partitions/x"),
            None,
            "NotFound",
        ),
        (
            format!("{entity}/ConsumerGroups/nope/Partitions/0"),
            None,
            "NotFound",
        ),
        (
            "other/ConsumerGroups/$Default/Partitions/0".to_owned(),
            None,
            "NotFound",
        ),
        (
            address(&hub, 0, "$Default", partition),
            Some("amqp.annotation.x-opt-sequence-number > '100'"),
            "argument-out-of-range",
        ),
        (
            address(&hub, 0, "$Default", partition),
            Some("amqp.annotation.x-opt-offset > '999999'"),
            "argument-out-of-range",
        ),
        (
            address(&hub, 0, "$Default", partition),
            Some("amqp.annotation.x-opt-partition-key > 'a'"),
            "argument-error",
        ),
        (
            address(&hub, 0, "$Default", partition),
            Some("sequence-number = 1"),
            "argument-error",
        ),
    ];
    for (i, (at, filter, want)) in cases.iter().enumerate() {
        let mut receiver = consumer(&mut session, &format!("bad{i}"), at, *filter, None).await;
        let error = refusal(&mut receiver).await;
        assert!(error.contains(want), "{at} {filter:?}: {error}");
    }
    // A wrong key is a failed login.
    let ep = HubEndpoint::of(&hub);
    let refused = Connection::builder()
        .container_id("wrong-key")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Plain {
            username: "service".into(),
            password: key_of(&hub, "iothubowner").to_base64(),
        })
        .open_with_stream(tls(&ep).await)
        .await;
    assert!(refused.is_err());
    // The emulator carries on: the configured group reads from the start.
    let at = address(&hub, 0, "ANALYTICS", partition);
    let mut reader = consumer(&mut session, "good", &at, None, None).await;
    assert_eq!(take(&mut reader, 2).await.len(), 2);
    // And a group that is not a valid name is a configuration error.
    let bad = Emulator::builder()
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .consumer_group("-bad-")
        .start()
        .await;
    assert!(bad.is_err());
}

/// An AMQP device's application properties reach an Event Hubs consumer with the AMQP types
/// the device sent them with.
#[tokio::test]
async fn amqp_application_properties_keep_their_types() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let key = RestClient::new(&ep, "iothubowner")
        .register_device("typed")
        .await;
    let token = azure_iot_test::device_token(&ep, "typed", None, &key, Duration::from_secs(600));
    let mut connection = Connection::builder()
        .container_id("typed-device")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Plain {
            username: "typed@sas.localhost".into(),
            password: token,
        })
        .open_with_stream(tls(&ep).await)
        .await
        .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut link = Sender::attach(&mut session, "telemetry", "/devices/typed/messages/events")
        .await
        .unwrap();
    let message = Message::builder()
        .properties(
            Properties::builder()
                .message_id("typed-1".to_owned())
                .build(),
        )
        .application_properties(
            ApplicationProperties::builder()
                .insert("count", SimpleValue::Int(42))
                .insert("ok", SimpleValue::Bool(true))
                .insert("ratio", SimpleValue::from(0.5f64))
                .insert("name", SimpleValue::String("x".into()))
                .build(),
        )
        .body(Body::Value(AmqpValue(Value::String("{}".into()))))
        .build();
    link.send(message).await.unwrap();
    let partition = hub.telemetry(0, 10).await.unwrap()[0].partition;
    let (_eh, mut eh_session) = plain(&hub, "service").await;
    let at = address(&hub, 0, "$Default", partition);
    let got = take(
        &mut consumer(&mut eh_session, "typed", &at, None, None).await,
        1,
    )
    .await;
    let properties = got[0].application_properties.as_ref().unwrap();
    assert_eq!(properties.get("count"), Some(&SimpleValue::Int(42)));
    assert_eq!(properties.get("ok"), Some(&SimpleValue::Bool(true)));
    assert_eq!(properties.get("ratio"), Some(&SimpleValue::from(0.5f64)));
    assert_eq!(
        properties.get("name"),
        Some(&SimpleValue::String("x".into()))
    );
}
