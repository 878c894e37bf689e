//! Devices over AMQP on real TLS with an independent AMQP 1.0 client (fe2o3-amqp): CBS with
//! device-key tokens, telemetry (single messages and batches), several devices on one
//! connection, and the refusals (another device's link, no token, an unreadable batch).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use azure_iot_core::message::Message as IotMessage;
use azure_iot_protocol::amqp::{BATCH_FORMAT, encode_batch, to_amqp};
use azure_iot_test::{HubEndpoint, RestClient, device_token, emulator};
use fe2o3_amqp::link::delivery::Sendable;
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message, Outcome, Properties,
};
use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Value};

async fn tls(hub: &HubEndpoint) -> azure_iot_test::TlsClientStream {
    azure_iot_test::tls_connect(hub, hub.amqp_addr)
        .await
        .unwrap()
}

/// A device connection as the Node SDK opens it: no SASL, CBS put-token with the audience
/// URL-encoded (the raw `sr` of the device's SAS token).
struct DeviceAmqp {
    connection: fe2o3_amqp::connection::ConnectionHandle<()>,
    session: fe2o3_amqp::session::SessionHandle<()>,
    cbs: (Sender, Receiver),
    next_id: u64,
}

impl DeviceAmqp {
    async fn open(ep: &HubEndpoint) -> Self {
        let mut connection = Connection::builder()
            .container_id("device-test")
            .hostname("localhost")
            .open_with_stream(tls(ep).await)
            .await
            .unwrap();
        let mut session = Session::begin(&mut connection).await.unwrap();
        let cbs = (
            Sender::attach(&mut session, "cbs-sender", "$cbs")
                .await
                .unwrap(),
            Receiver::attach(&mut session, "cbs-receiver", "$cbs")
                .await
                .unwrap(),
        );
        Self {
            connection,
            session,
            cbs,
            next_id: 0,
        }
    }

    /// Puts `device`'s own-key token; returns the answer's status code.
    async fn put_device_token(&mut self, ep: &HubEndpoint, device: &str, key: &str) -> i32 {
        self.put_device_token_for(ep, device, key, Duration::from_secs(600))
            .await
    }

    /// Puts `device`'s own-key token valid for `ttl`; returns the answer's status code.
    async fn put_device_token_for(
        &mut self,
        ep: &HubEndpoint,
        device: &str,
        key: &str,
        ttl: Duration,
    ) -> i32 {
        let token = device_token(ep, device, None, key, ttl);
        self.next_id += 1;
        let request = Message::builder()
            .properties(
                Properties::builder()
                    .message_id(format!("put-{}", self.next_id))
                    .reply_to("cbs")
                    .to("$cbs")
                    .build(),
            )
            .application_properties(
                ApplicationProperties::builder()
                    .insert("operation", "put-token")
                    .insert("type", "servicebus.windows.net:sastoken")
                    .insert("name", format!("{}%2Fdevices%2F{device}", ep.hostname))
                    .build(),
            )
            .body(Body::Value(AmqpValue(Value::String(token))))
            .build();
        self.cbs.0.send(request).await.unwrap();
        let answer =
            tokio::time::timeout(Duration::from_secs(10), self.cbs.1.recv::<Body<Value>>())
                .await
                .expect("a CBS answer")
                .unwrap();
        self.cbs.1.accept(&answer).await.unwrap();
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

    async fn telemetry_link(&mut self, device: &str) -> Sender {
        Sender::attach(
            &mut self.session,
            format!("telemetry-{device}"),
            format!("/devices/{device}/messages/events"),
        )
        .await
        .unwrap()
    }

    /// Why the hub refuses `device`'s telemetry link (its attach is answered, then detached
    /// with the error; a send shows it).
    async fn telemetry_refusal(&mut self, device: &str) -> String {
        match Sender::attach(
            &mut self.session,
            format!("probe-{device}"),
            format!("/devices/{device}/messages/events"),
        )
        .await
        {
            Err(e) => format!("{e:?}"),
            Ok(mut sender) => format!(
                "{:?}",
                sender
                    .send(to_amqp(&telemetry("{}", "probe")))
                    .await
                    .expect_err("a refused link takes no message")
            ),
        }
    }
}

fn telemetry(body: &str, id: &str) -> IotMessage {
    IotMessage::builder(body.as_bytes().to_vec())
        .message_id(id)
        .content_type("application/json")
        .property("p1", "v1")
        .build()
        .unwrap()
}

#[tokio::test]
async fn telemetry_over_amqp_with_a_device_key_token() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let api = RestClient::new(&ep, "iothubowner");
    let key = api.register_device("dev1").await;
    let mut device = DeviceAmqp::open(&ep).await;
    assert_eq!(device.put_device_token(&ep, "dev1", &key).await, 200);
    let mut link = device.telemetry_link("dev1").await;
    let outcome = link
        .send(to_amqp(&telemetry(r#"{"t":21}"#, "m-1")))
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");

    let events = hub.telemetry(0, 10).await.unwrap();
    assert_eq!(events.len(), 1, "stored before it was accepted");
    let event = &events[0];
    assert_eq!(event.device_id, "dev1");
    assert_eq!(event.message.body().as_ref(), br#"{"t":21}"#);
    let system = event.message.system_properties();
    assert_eq!(system.message_id.as_deref(), Some("m-1"));
    assert_eq!(system.content_type.as_deref(), Some("application/json"));
    assert_eq!(system.connection_device_id.as_deref(), Some("dev1"));
    assert_eq!(system.connection_auth_method.as_deref(), Some("sas"));
    assert_eq!(event.message.property("p1"), Some("v1"));
    let _ = device.connection.close().await;
    hub.shutdown().await;
}

/// A batch (`message-format` 0x80013700, one encoded message per data section) is stored
/// whole, in order; a batch with a section that is not a message is rejected and stores
/// nothing.
#[tokio::test]
async fn batched_telemetry_is_stored_whole_or_not_at_all() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let key = RestClient::new(&ep, "iothubowner")
        .register_device("dev1")
        .await;
    let mut device = DeviceAmqp::open(&ep).await;
    assert_eq!(device.put_device_token(&ep, "dev1", &key).await, 200);
    let mut link = device.telemetry_link("dev1").await;
    let batch = encode_batch(
        &(0..3)
            .map(|n| to_amqp(&telemetry(&n.to_string(), &format!("b-{n}"))))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let outcome = link
        .send(
            Sendable::builder()
                .message(batch)
                .message_format(BATCH_FORMAT)
                .build(),
        )
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    let ids: Vec<_> = hub
        .telemetry(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.message.system_properties().message_id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["b-0", "b-1", "b-2"]);

    let broken: Message<Body<Value>> = Message::builder()
        .body(Body::Data(
            vec![
                Data(Binary::from(b"not an AMQP message".to_vec())),
                Data(Binary::from(Vec::new())),
            ]
            .into(),
        ))
        .build();
    let outcome = link
        .send(
            Sendable::builder()
                .message(broken)
                .message_format(BATCH_FORMAT)
                .build(),
        )
        .await
        .unwrap();
    match outcome {
        Outcome::Rejected(r) => assert!(format!("{r:?}").contains("DecodeError"), "{r:?}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(hub.telemetry(0, 10).await.unwrap().len(), 3, "nothing more");
    let _ = device.connection.close().await;
    hub.shutdown().await;
}

/// One connection carries several devices, each on the token put for it; a device's link
/// without its token is refused, and a token for one device opens no other device's link.
#[tokio::test]
async fn several_devices_share_a_connection_each_on_its_own_token() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let api = RestClient::new(&ep, "iothubowner");
    let key1 = api.register_device("dev1").await;
    let key2 = api.register_device("dev2").await;
    api.register_device("dev3").await;
    let mut device = DeviceAmqp::open(&ep).await;
    assert_eq!(device.put_device_token(&ep, "dev1", &key1).await, 200);
    assert_eq!(device.put_device_token(&ep, "dev2", &key2).await, 200);
    // dev1's key does not grant dev3.
    assert_eq!(device.put_device_token(&ep, "dev3", &key1).await, 401);
    let refusal = device.telemetry_refusal("dev3").await;
    assert!(refusal.contains("UnauthorizedAccess"), "{refusal}");

    let mut one = device.telemetry_link("dev1").await;
    let mut two = device.telemetry_link("dev2").await;
    for (link, id) in [(&mut one, "from-1"), (&mut two, "from-2")] {
        let outcome = link.send(to_amqp(&telemetry("{}", id))).await.unwrap();
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    }
    let mut senders: Vec<_> = hub
        .telemetry(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.device_id.clone(),
                e.message.system_properties().message_id.clone(),
            )
        })
        .collect();
    senders.sort();
    assert_eq!(
        senders,
        [
            ("dev1".to_owned(), Some("from-1".to_owned())),
            ("dev2".to_owned(), Some("from-2".to_owned()))
        ]
    );
    let _ = device.connection.close().await;
    hub.shutdown().await;
}

/// A device deleted while its link is open: the hub ends the device's connection and the
/// link is detached, saying why.
#[tokio::test]
async fn deleting_the_device_detaches_its_link() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let api = RestClient::new(&ep, "iothubowner");
    let key = api.register_device("dev1").await;
    let mut device = DeviceAmqp::open(&ep).await;
    assert_eq!(device.put_device_token(&ep, "dev1", &key).await, 200);
    let mut link = device.telemetry_link("dev1").await;
    assert!(matches!(
        link.send(to_amqp(&telemetry("{}", "before")))
            .await
            .unwrap(),
        Outcome::Accepted(_)
    ));
    api.delete("/devices/dev1").await;
    let detached = tokio::time::timeout(Duration::from_secs(10), link.on_detach())
        .await
        .expect("detached by the hub");
    assert!(
        format!("{detached:?}").contains("DetachForced"),
        "{detached:?}"
    );
    let _ = device.connection.close().await;
    hub.shutdown().await;
}

fn c2d(id: &str) -> IotMessage {
    IotMessage::builder(format!("body of {id}").into_bytes())
        .message_id(id)
        .ack(azure_iot_core::message::AckMode::Full)
        .property("k", "v")
        .build()
        .unwrap()
}

async fn next_c2d(receiver: &mut Receiver) -> fe2o3_amqp::link::delivery::Delivery<Body<Value>> {
    tokio::time::timeout(Duration::from_secs(10), receiver.recv::<Body<Value>>())
        .await
        .expect("a cloud-to-device message within 10 s")
        .unwrap()
}

fn message_id(delivery: &fe2o3_amqp::link::delivery::Delivery<Body<Value>>) -> String {
    azure_iot_protocol::amqp::from_amqp(delivery.message())
        .unwrap()
        .system_properties()
        .message_id
        .clone()
        .unwrap()
}

/// Cloud-to-device over AMQP: the waiting message first, then each as it arrives; accepted
/// completes, released abandons (delivered again, its count up), rejected dead-letters with
/// `Rejected` feedback.
#[tokio::test]
async fn cloud_to_device_over_amqp_is_settled_by_the_outcome() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let api = RestClient::new(&ep, "iothubowner");
    let key = api.register_device("dev1").await;
    hub.send_cloud_to_device("dev1", c2d("m1")).await.unwrap();
    let mut device = DeviceAmqp::open(&ep).await;
    assert_eq!(device.put_device_token(&ep, "dev1", &key).await, 200);
    let mut receiver = Receiver::attach(
        &mut device.session,
        "c2d",
        "amqps://localhost/devices/dev1/messages/deviceBound",
    )
    .await
    .unwrap();

    let first = next_c2d(&mut receiver).await;
    assert_eq!(message_id(&first), "m1");
    let properties = first.message().properties.clone().unwrap();
    assert!(
        properties
            .to
            .as_deref()
            .is_some_and(|to| to.eq_ignore_ascii_case("/devices/dev1/messages/devicebound")),
        "{:?}",
        properties.to
    );
    receiver.accept(&first).await.unwrap();

    hub.send_cloud_to_device("dev1", c2d("m2")).await.unwrap();
    let second = next_c2d(&mut receiver).await;
    assert_eq!(message_id(&second), "m2");
    receiver.release(&second).await.unwrap();
    let again = next_c2d(&mut receiver).await;
    assert_eq!(message_id(&again), "m2", "an abandoned message comes back");
    let count = |d: &fe2o3_amqp::link::delivery::Delivery<Body<Value>>| {
        azure_iot_protocol::amqp::from_amqp(d.message())
            .unwrap()
            .system_properties()
            .delivery_count
            .unwrap()
    };
    assert_eq!(
        count(&again),
        count(&second) + 1,
        "with its delivery count up"
    );
    receiver.reject(&again, None).await.unwrap();

    // Both settled: nothing left in the queue; the rejection is reported as feedback.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = api.get("/devices/dev1").await.body["cloudToDeviceMessageCount"].clone();
        if waiting == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {waiting} waiting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut statuses = Vec::new();
    while statuses.len() < 2 {
        let batch = api.get("/messages/serviceBound/feedback").await;
        if batch.status == reqwest::StatusCode::OK {
            let etag = batch.headers["etag"]
                .to_str()
                .unwrap()
                .trim_matches('"')
                .to_owned();
            for record in batch.body.as_array().unwrap() {
                statuses.push((
                    record["originalMessageId"].as_str().unwrap().to_owned(),
                    record["statusCode"].as_str().unwrap().to_owned(),
                ));
            }
            api.delete(&format!("/messages/serviceBound/feedback/{etag}"))
                .await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "feedback: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [
            ("m1".to_owned(), "Success".to_owned()),
            ("m2".to_owned(), "Rejected".to_owned())
        ]
    );
    let _ = device.connection.close().await;
    hub.shutdown().await;
}

fn twin_request(
    correlation: &str,
    operation: &str,
    resource: Option<&str>,
    body: &[u8],
) -> Message<Body<Value>> {
    use fe2o3_amqp_types::messaging::MessageAnnotations;
    use fe2o3_amqp_types::messaging::annotations::OwnedKey;
    use fe2o3_amqp_types::primitives::Symbol;
    let mut annotations = MessageAnnotations::default();
    annotations.insert(
        OwnedKey::Symbol(Symbol::from("operation")),
        Value::String(operation.to_owned()),
    );
    if let Some(resource) = resource {
        annotations.insert(
            OwnedKey::Symbol(Symbol::from("resource")),
            Value::String(resource.to_owned()),
        );
    }
    Message::builder()
        .properties(
            Properties::builder()
                .correlation_id(correlation.to_owned())
                .build(),
        )
        .message_annotations(annotations)
        .body(Body::Data(vec![Data(Binary::from(body.to_vec()))].into()))
        .build()
}

fn annotation(message: &Message<Body<Value>>, name: &str) -> Option<Value> {
    use fe2o3_amqp_types::messaging::annotations::OwnedKey;
    use fe2o3_amqp_types::primitives::Symbol;
    message
        .message_annotations
        .as_ref()?
        .get(&OwnedKey::Symbol(Symbol::from(name)))
        .cloned()
}

fn body_json(message: &Message<Body<Value>>) -> serde_json::Value {
    match &message.body {
        Body::Data(sections) => {
            let bytes: Vec<u8> = sections.iter().flat_map(|d| d.0.iter().copied()).collect();
            serde_json::from_slice(&bytes).unwrap()
        }
        other => panic!("expected one data section, got {other:?}"),
    }
}

/// Sends a twin request and waits for its answer.
async fn ask(
    requests: &mut Sender,
    answers: &mut Receiver,
    request: Message<Body<Value>>,
) -> Message<Body<Value>> {
    requests.send(request).await.unwrap();
    answer(answers).await
}

/// The next message on the twin answer link, accepted.
async fn answer(answers: &mut Receiver) -> Message<Body<Value>> {
    let delivery = tokio::time::timeout(Duration::from_secs(10), answers.recv::<Body<Value>>())
        .await
        .expect("an answer")
        .unwrap();
    answers.accept(&delivery).await.unwrap();
    delivery.into_message()
}

/// The twin over AMQP as the Node SDK drives it: GET, PATCH reported (204 with the new
/// version), PUT the desired-patch subscription, then a service-side desired patch arrives
/// without a correlation id.
#[tokio::test]
async fn the_twin_over_amqp() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let api = RestClient::new(&ep, "iothubowner");
    let key = api.register_device("dev1").await;
    let mut device = DeviceAmqp::open(&ep).await;
    assert_eq!(device.put_device_token(&ep, "dev1", &key).await, 200);
    let mut requests = Sender::attach(&mut device.session, "twin-sender", "/devices/dev1/twin")
        .await
        .unwrap();
    let mut answers = Receiver::attach(&mut device.session, "twin-receiver", "/devices/dev1/twin")
        .await
        .unwrap();

    let got = ask(
        &mut requests,
        &mut answers,
        twin_request("get-1", "GET", None, b" "),
    )
    .await;
    assert_eq!(
        got.properties.as_ref().unwrap().correlation_id,
        Some(fe2o3_amqp_types::messaging::MessageId::String(
            "get-1".into()
        ))
    );
    assert_eq!(annotation(&got, "status"), Some(Value::Int(200)));
    let twin = body_json(&got);
    assert!(
        twin["desired"].is_object() && twin["reported"].is_object(),
        "{twin}"
    );

    let patched = ask(
        &mut requests,
        &mut answers,
        twin_request(
            "patch-1",
            "PATCH",
            Some("/properties/reported"),
            br#"{"temperature":21}"#,
        ),
    )
    .await;
    assert_eq!(annotation(&patched, "status"), Some(Value::Int(204)));
    assert!(matches!(annotation(&patched, "version"), Some(Value::Long(v)) if v >= 2));
    let got = ask(
        &mut requests,
        &mut answers,
        twin_request("get-2", "GET", None, b" "),
    )
    .await;
    assert_eq!(body_json(&got)["reported"]["temperature"], 21);

    let subscribed = ask(
        &mut requests,
        &mut answers,
        twin_request(
            "put-1",
            "PUT",
            Some("/notifications/twin/properties/desired"),
            b" ",
        ),
    )
    .await;
    assert_eq!(annotation(&subscribed, "status"), Some(Value::Int(200)));
    let r = api
        .request(
            reqwest::Method::PATCH,
            "/twins/dev1",
            Some(serde_json::json!({"properties": {"desired": {"fan": "on"}}})),
            &[],
        )
        .await;
    assert!(r.status.is_success(), "{r:?}");
    let patch = answer(&mut answers).await;
    assert!(
        patch
            .properties
            .as_ref()
            .and_then(|p| p.correlation_id.clone())
            .is_none(),
        "a notification has no correlation id"
    );
    assert_eq!(body_json(&patch)["fan"], "on");

    let bad = ask(
        &mut requests,
        &mut answers,
        twin_request("bad-1", "POST", Some("/nothing"), b"{}"),
    )
    .await;
    assert_eq!(annotation(&bad, "status"), Some(Value::Int(400)));
    let _ = device.connection.close().await;
    hub.shutdown().await;
}

/// The twin's two links attach independently: a request sent before the answer link is
/// attached is answered once it is, not dropped (CI once lost this race).
#[tokio::test]
async fn a_twin_request_sent_before_the_answer_link_is_answered() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let api = RestClient::new(&ep, "iothubowner");
    let key = api.register_device("dev1").await;
    let mut device = DeviceAmqp::open(&ep).await;
    assert_eq!(device.put_device_token(&ep, "dev1", &key).await, 200);
    let mut requests = Sender::attach(&mut device.session, "twin-sender", "/devices/dev1/twin")
        .await
        .unwrap();
    requests
        .send(twin_request("early", "GET", None, b" "))
        .await
        .unwrap();
    let mut answers = Receiver::attach(&mut device.session, "twin-receiver", "/devices/dev1/twin")
        .await
        .unwrap();
    let got = answer(&mut answers).await;
    assert_eq!(
        got.properties.as_ref().unwrap().correlation_id,
        Some(fe2o3_amqp_types::messaging::MessageId::String(
            "early".into()
        ))
    );
    assert_eq!(annotation(&got, "status"), Some(Value::Int(200)));
    let _ = device.connection.close().await;
    hub.shutdown().await;
}

/// A direct method over AMQP: the request carries the method name and a uuid correlation id;
/// the device's answer (that id, `IoThub-status` int, JSON body) is what the service's
/// invocation returns.
#[tokio::test]
async fn a_direct_method_over_amqp() {
    use fe2o3_amqp_types::messaging::MessageId;
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let api = RestClient::new(&ep, "iothubowner");
    let key = api.register_device("dev1").await;
    let mut device = DeviceAmqp::open(&ep).await;
    assert_eq!(device.put_device_token(&ep, "dev1", &key).await, 200);
    let mut requests = Receiver::attach(
        &mut device.session,
        "methods-receiver",
        "amqps://localhost/devices/dev1/methods/deviceBound",
    )
    .await
    .unwrap();
    let mut answers = Sender::attach(
        &mut device.session,
        "methods-sender",
        "/devices/dev1/methods/devicebound",
    )
    .await
    .unwrap();
    // The call is retried while the hub does not yet know the device listens (the links'
    // subscription lands asynchronously): 404 DeviceNotOnline until then.
    let call = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let reply = api
                .request(
                    reqwest::Method::POST,
                    "/twins/dev1/methods",
                    Some(serde_json::json!({"methodName": "reboot", "payload": {"delay": 5}, "responseTimeoutInSeconds": 10})),
                    &[],
                )
                .await;
            if reply.status != reqwest::StatusCode::NOT_FOUND
                || tokio::time::Instant::now() > deadline
            {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let request = tokio::time::timeout(Duration::from_secs(10), requests.recv::<Body<Value>>())
        .await
        .expect("the method request")
        .unwrap();
    requests.accept(&request).await.unwrap();
    let request = request.into_message();
    let correlation = request
        .properties
        .as_ref()
        .unwrap()
        .correlation_id
        .clone()
        .unwrap();
    assert!(matches!(correlation, MessageId::Uuid(_)), "{correlation:?}");
    assert_eq!(
        request
            .application_properties
            .as_ref()
            .unwrap()
            .get("IoThub-methodname"),
        Some(&SimpleValue::String("reboot".into()))
    );
    assert_eq!(body_json(&request), serde_json::json!({"delay": 5}));
    let answer: Message<Body<Value>> = Message::builder()
        .properties(Properties::builder().correlation_id(correlation).build())
        .application_properties(
            ApplicationProperties::builder()
                .insert("IoThub-status", SimpleValue::Int(201))
                .build(),
        )
        .body(Body::Data(
            vec![Data(Binary::from(br#"{"ok":true}"#.to_vec()))].into(),
        ))
        .build();
    assert!(matches!(
        answers.send(answer).await.unwrap(),
        Outcome::Accepted(_)
    ));
    let reply = call.await.unwrap();
    assert_eq!(reply.status, reqwest::StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body["status"], 201);
    assert_eq!(reply.body["payload"], serde_json::json!({"ok": true}));
    let _ = device.connection.close().await;
    hub.shutdown().await;
}

/// SASL PLAIN as IoT Hub documents it for devices (`{deviceId}@sas.{hubName}`, the device's
/// SAS token as password) authorizes that device's links without a put-token; a wrong token
/// closes the connection as unauthorized.
#[tokio::test]
async fn sasl_plain_with_a_device_token() {
    use fe2o3_amqp::sasl_profile::SaslProfile;
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let key = RestClient::new(&ep, "iothubowner")
        .register_device("dev1")
        .await;
    let token = device_token(&ep, "dev1", None, &key, Duration::from_secs(600));
    let mut connection = Connection::builder()
        .container_id("plain-device")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Plain {
            username: "dev1@sas.localhost".into(),
            password: token,
        })
        .open_with_stream(tls(&ep).await)
        .await
        .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut link = Sender::attach(&mut session, "telemetry", "/devices/dev1/messages/events")
        .await
        .unwrap();
    let outcome = link.send(to_amqp(&telemetry("{}", "plain"))).await.unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    let _ = connection.close().await;

    let other_key = azure_iot_core::SharedAccessKey::from_bytes(vec![7u8; 32]).unwrap();
    let forged = device_token(
        &ep,
        "dev1",
        None,
        &other_key.to_base64(),
        Duration::from_secs(600),
    );
    let refused = Connection::builder()
        .container_id("plain-forged")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Plain {
            username: "dev1@sas.localhost".into(),
            password: forged,
        })
        .open_with_stream(tls(&ep).await)
        .await;
    match refused {
        Err(e) => assert!(format!("{e:?}").contains("Unauthorized"), "{e:?}"),
        Ok(mut connection) => {
            let ended = tokio::time::timeout(Duration::from_secs(10), connection.on_close())
                .await
                .expect("closed by the hub");
            assert!(
                format!("{ended:?}").contains("UnauthorizedAccess"),
                "{ended:?}"
            );
        }
    }
    hub.shutdown().await;
}

/// An X.509 device over AMQP: no SASL, no token; the TLS client certificate it connected with
/// authenticates its first link. Another device's link on the same connection is refused.
#[tokio::test]
async fn an_x509_device_authenticates_with_its_tls_certificate() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let api = RestClient::new(&ep, "iothubowner");
    let (cert, key, thumbprint) = azure_iot_test::self_signed_device_certificate("x509dev");
    api.put(
        "/devices/x509dev",
        serde_json::json!({"authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": thumbprint, "secondaryThumbprint": null}}}),
    )
    .await;
    api.register_device("other").await;
    let tcp = tokio::net::TcpStream::connect(ep.amqp_addr).await.unwrap();
    let tls =
        tokio_rustls::TlsConnector::from(Arc::new(ep.tls_config_with_certificate(vec![cert], key)))
            .connect(
                rustls_pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
    let mut connection = Connection::builder()
        .container_id("x509-device")
        .hostname("localhost")
        .open_with_stream(tls)
        .await
        .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut link = Sender::attach(
        &mut session,
        "telemetry",
        "/devices/x509dev/messages/events",
    )
    .await
    .unwrap();
    let outcome = link
        .send(to_amqp(&telemetry("{}", "by-cert")))
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    let events = hub.telemetry(0, 10).await.unwrap();
    assert_eq!(
        events[0]
            .message
            .system_properties()
            .connection_auth_method
            .as_deref(),
        Some("x509")
    );
    let mut other = Sender::attach(&mut session, "other", "/devices/other/messages/events")
        .await
        .unwrap();
    let refused = other
        .send(to_amqp(&telemetry("{}", "not-mine")))
        .await
        .expect_err("another device's link is refused");
    assert!(
        format!("{refused:?}").contains("UnauthorizedAccess"),
        "{refused:?}"
    );
    let _ = connection.close().await;
    hub.shutdown().await;
}

/// A device's links live as long as its token: when it expires unrenewed they are detached,
/// saying so; a device whose token was renewed in time keeps its links on the same
/// connection.
#[tokio::test]
async fn links_end_when_their_token_expires_unless_it_is_renewed() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let api = RestClient::new(&ep, "iothubowner");
    let key1 = api.register_device("dev1").await;
    let key2 = api.register_device("dev2").await;
    let mut device = DeviceAmqp::open(&ep).await;
    let short = Duration::from_secs(3);
    assert_eq!(
        device.put_device_token_for(&ep, "dev1", &key1, short).await,
        200
    );
    assert_eq!(
        device.put_device_token_for(&ep, "dev2", &key2, short).await,
        200
    );
    let mut one = device.telemetry_link("dev1").await;
    let mut two = device.telemetry_link("dev2").await;
    // dev2 renews at once; dev1 does not.
    assert_eq!(device.put_device_token(&ep, "dev2", &key2).await, 200);
    let detached = tokio::time::timeout(Duration::from_secs(10), one.on_detach())
        .await
        .expect("dev1's link is detached when its token expires");
    assert!(format!("{detached:?}").contains("expired"), "{detached:?}");
    let outcome = two
        .send(to_amqp(&telemetry("{}", "renewed")))
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    let _ = device.connection.close().await;
    hub.shutdown().await;
}

/// The tokens one connection may hold are bounded (IoT Hub: 999; configurable): a put-token
/// for one audience more is answered 403 and grants nothing; renewing a held audience still
/// works.
#[tokio::test]
async fn the_tokens_one_connection_holds_are_bounded() {
    let hub = azure_iot_emulator::Emulator::builder()
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .limits(azure_iot_emulator::Limits {
            max_amqp_tokens: 2,
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    let ep = HubEndpoint::of(&hub);
    let api = RestClient::new(&ep, "iothubowner");
    let mut keys = Vec::new();
    for device in ["d1", "d2", "d3"] {
        keys.push(api.register_device(device).await);
    }
    let mut device = DeviceAmqp::open(&ep).await;
    assert_eq!(device.put_device_token(&ep, "d1", &keys[0]).await, 200);
    assert_eq!(device.put_device_token(&ep, "d2", &keys[1]).await, 200);
    assert_eq!(device.put_device_token(&ep, "d3", &keys[2]).await, 403);
    assert_eq!(device.put_device_token(&ep, "d1", &keys[0]).await, 200);
    let refusal = device.telemetry_refusal("d3").await;
    assert!(refusal.contains("UnauthorizedAccess"), "{refusal}");
    let _ = device.connection.close().await;
    hub.shutdown().await;
}
