//! Service AMQP over real TLS with an independent AMQP 1.0 client (fe2o3-amqp): no-SASL and
//! SASL PLAIN connections, CBS put-token, cloud-to-device sends and refusals, and the feedback
//! link.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use azure_iot_core::{ResourceUri, SasToken, ServiceConnectionString};
use azure_iot_emulator::Fault;
use azure_iot_protocol::mqtt::codec::{Packet, PubAck, QoS};
use azure_iot_test::{HubEndpoint, MqttClient, RestClient, device_token, emulator};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, Outcome, Properties,
};
use fe2o3_amqp_types::primitives::{SimpleValue, Value};
use reqwest::StatusCode;
use serde_json::json;

async fn tls(hub: &HubEndpoint) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(hub.amqp_addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(hub.tls_config()))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

fn service_token(hub: &HubEndpoint, policy: &str) -> String {
    let cs = ServiceConnectionString::parse(hub.connection_string(policy)).unwrap();
    SasToken::generate_with_ttl(
        &ResourceUri::hub(&hub.hostname),
        cs.key(),
        Some(policy),
        Duration::from_secs(600),
    )
    .secret()
    .to_owned()
}

/// The CBS links of a connection, kept for its whole life as the SDKs do.
struct Cbs {
    requests: Sender,
    answers: Receiver,
    next_id: u64,
}

impl Cbs {
    async fn attach(session: &mut fe2o3_amqp::session::SessionHandle<()>) -> Self {
        Self {
            requests: Sender::attach(session, "cbs-sender", "$cbs").await.unwrap(),
            answers: Receiver::attach(session, "cbs-receiver", "$cbs")
                .await
                .unwrap(),
            next_id: 0,
        }
    }

    /// Puts `token` the way the Node SDK does; returns the answer's status code.
    async fn put(&mut self, hub: &HubEndpoint, token: &str) -> i32 {
        self.put_as(hub.hostname.as_str(), token).await
    }

    /// Puts `token` for `audience`; returns the answer's status code.
    async fn put_as(&mut self, audience: &str, token: &str) -> i32 {
        self.next_id += 1;
        let id = format!("req-{}", self.next_id);
        let request = Message::builder()
            .properties(
                Properties::builder()
                    .message_id(id.clone())
                    .reply_to("cbs")
                    .to("$cbs")
                    .build(),
            )
            .application_properties(
                ApplicationProperties::builder()
                    .insert("operation", "put-token")
                    .insert("type", "servicebus.windows.net:sastoken")
                    .insert("name", audience)
                    .build(),
            )
            .body(Body::Value(AmqpValue(Value::String(token.to_owned()))))
            .build();
        self.requests.send(request).await.unwrap();
        let answer =
            tokio::time::timeout(Duration::from_secs(10), self.answers.recv::<Body<Value>>())
                .await
                .expect("a CBS answer within 10 s")
                .unwrap();
        self.answers.accept(&answer).await.unwrap();
        let message = answer.into_message();
        assert_eq!(
            message.properties.unwrap().correlation_id,
            Some(fe2o3_amqp_types::messaging::MessageId::String(id)),
            "the answer correlates with the request's message id"
        );
        match message.application_properties.unwrap().get("status-code") {
            Some(SimpleValue::Int(code)) => *code,
            other => panic!("status-code {other:?}"),
        }
    }
}

fn c2d(device: &str, id: &str) -> Message<Body<Value>> {
    Message::builder()
        .properties(
            Properties::builder()
                .message_id(id.to_owned())
                .to(format!("/devices/{device}/messages/devicebound"))
                .build(),
        )
        .application_properties(
            ApplicationProperties::builder()
                .insert("iothub-ack", "full")
                .insert("color", "blue")
                .build(),
        )
        .body(Body::Data(
            vec![fe2o3_amqp_types::messaging::Data(
                b"hello device".to_vec().into(),
            )]
            .into(),
        ))
        .build()
}

#[tokio::test]
async fn c2d_over_amqp_with_cbs_then_feedback() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let api = RestClient::new(&ep, "iothubowner");
    let key = api.put("/devices/dev1", json!({})).await.body["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();

    // Node-style: no SASL, CBS only.
    let (mut connection, mut session) = service_session(&ep).await;

    // Before any token: refused.
    let mut sender = Sender::attach(&mut session, "c2d", "/messages/devicebound")
        .await
        .unwrap();
    match sender.send(c2d("dev1", "early")).await.unwrap() {
        Outcome::Rejected(r) => assert!(
            format!("{:?}", r.error).contains("UnauthorizedAccess"),
            "{r:?}"
        ),
        other => panic!("expected a rejection, got {other:?}"),
    }
    // A token of a policy without ServiceConnect is refused with 401; iothubowner's with 200.
    let mut cbs = Cbs::attach(&mut session).await;
    assert_eq!(cbs.put(&ep, &service_token(&ep, "registryRead")).await, 401);
    assert_eq!(cbs.put(&ep, &service_token(&ep, "iothubowner")).await, 200);

    assert!(matches!(
        sender.send(c2d("dev1", "m1")).await.unwrap(),
        Outcome::Accepted(_)
    ));
    match sender.send(c2d("ghost", "m2")).await.unwrap() {
        Outcome::Rejected(r) => assert!(format!("{:?}", r.error).contains("NotFound"), "{r:?}"),
        other => panic!("expected amqp:not-found, got {other:?}"),
    }
    assert_eq!(
        api.get("/devices/dev1").await.body["cloudToDeviceMessageCount"],
        1
    );

    // The device receives it over MQTT with the service's properties, and completes it.
    let token = device_token(&ep, "dev1", None, &key, Duration::from_secs(600));
    let (mut device, _) = MqttClient::connect(&ep, "dev1", &token, true, 60).await;
    device
        .subscribe("devices/dev1/messages/devicebound/#", QoS::AtLeastOnce)
        .await;
    let delivered = match device.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(delivered.payload.as_ref(), b"hello device");
    assert!(
        delivered.topic.contains("%24.mid=m1") && delivered.topic.contains("color=blue"),
        "{}",
        delivered.topic
    );
    device
        .send(Packet::PubAck(PubAck::new(delivered.pkid)))
        .await;

    // Feedback arrives on the feedback link; accepting it completes it.
    let mut feedback =
        Receiver::attach(&mut session, "feedback", "/messages/serviceBound/feedback")
            .await
            .unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(10), feedback.recv::<Body<Value>>())
        .await
        .unwrap()
        .unwrap();
    feedback.accept(&batch).await.unwrap();
    let message = batch.into_message();
    assert_eq!(
        message
            .properties
            .as_ref()
            .and_then(|p| p.content_type.clone())
            .map(|c| c.0),
        Some("application/vnd.microsoft.iothub.feedback.json".to_owned())
    );
    let body = match &message.body {
        Body::Data(batch) => batch.iter().flat_map(|d| d.0.to_vec()).collect::<Vec<u8>>(),
        other => panic!("feedback must be a data section, got {other:?}"),
    };
    let records: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(records[0]["originalMessageId"], "m1");
    assert_eq!(records[0]["statusCode"], "Success");
    assert_eq!(records[0]["description"], "Success");
    // A batch taken on the AMQP link is not offered to another reader (completion itself is
    // covered by the REST feedback tests in c2d.rs).
    assert_eq!(
        api.get("/messages/serviceBound/feedback").await.status,
        StatusCode::NO_CONTENT
    );

    // Unknown addresses are refused explicitly.
    let refused = Sender::attach(&mut session, "other", "/messages/events").await;
    if let Ok(mut s) = refused {
        assert!(
            s.send(c2d("dev1", "x")).await.is_err(),
            "sending on an unserved link must fail"
        );
    }
    let _ = session.end().await;
    let _ = connection.close().await;
    hub.shutdown().await;
}

#[tokio::test]
async fn sasl_plain_with_a_policy_token_authorizes_the_connection() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let api = RestClient::new(&ep, "iothubowner");
    api.put("/devices/dev1", json!({})).await;
    let hub_name = ep.hostname.split('.').next().unwrap().to_owned();
    let mut connection = Connection::builder()
        .container_id("c-sdk-style")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Plain {
            username: format!("iothubowner@sas.root.{hub_name}"),
            password: service_token(&ep, "iothubowner"),
        })
        .open_with_stream(tls(&ep).await)
        .await
        .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut sender = Sender::attach(
        &mut session,
        "c2d",
        "amqps://localhost/messages/deviceBound",
    )
    .await
    .unwrap();
    assert!(matches!(
        sender.send(c2d("dev1", "plain-1")).await.unwrap(),
        Outcome::Accepted(_)
    ));
    let _ = connection.close().await;

    // A bad password is refused at SASL.
    let refused = Connection::builder()
        .container_id("bad")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Plain {
            username: format!("iothubowner@sas.root.{hub_name}"),
            password: "SharedAccessSignature sr=localhost&sig=AAAA&se=9999999999&skn=iothubowner"
                .into(),
        })
        .open_with_stream(tls(&ep).await)
        .await;
    assert!(refused.is_err());
    hub.shutdown().await;
}

/// A byte stream carried over a WebSocket to `/$iothub/websocket` with subprotocol AMQPWSB10,
/// as the SDKs' AMQP-over-WebSockets transports open it.
async fn websocket_stream(hub: &HubEndpoint) -> tokio::io::DuplexStream {
    azure_iot_test::websocket_stream(hub, "/$iothub/websocket", "AMQPWSB10", hub.tls_config()).await
}

#[tokio::test]
async fn amqp_over_websockets_on_the_https_port() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    RestClient::new(&ep, "iothubowner")
        .put("/devices/dev1", json!({}))
        .await;
    let mut connection = Connection::builder()
        .container_id("ws-service")
        .hostname("localhost")
        .open_with_stream(websocket_stream(&ep).await)
        .await
        .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = Cbs::attach(&mut session).await;
    assert_eq!(cbs.put(&ep, &service_token(&ep, "service")).await, 200);
    let mut sender = Sender::attach(&mut session, "c2d", "/messages/devicebound")
        .await
        .unwrap();
    assert!(matches!(
        sender.send(c2d("dev1", "over-ws")).await.unwrap(),
        Outcome::Accepted(_)
    ));
    assert_eq!(
        RestClient::new(&ep, "iothubowner")
            .get("/devices/dev1")
            .await
            .body["cloudToDeviceMessageCount"],
        1
    );
    let _ = connection.close().await;
    hub.shutdown().await;
}

/// After the CBS token expires (here: the `ExpireServiceTokens` fault, so no waiting), a send
/// is refused as unauthorized and the link is closed, as the hub does.
#[tokio::test]
async fn an_expired_cbs_token_ends_the_link() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let api = RestClient::new(&ep, "iothubowner");
    api.put("/devices/dev1", json!({})).await;
    let mut connection = Connection::builder()
        .container_id("expiring")
        .hostname("localhost")
        .open_with_stream(tls(&ep).await)
        .await
        .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = Cbs::attach(&mut session).await;
    assert_eq!(cbs.put(&ep, &service_token(&ep, "iothubowner")).await, 200);
    let mut sender = Sender::attach(&mut session, "c2d", "/messages/devicebound")
        .await
        .unwrap();
    assert!(matches!(
        sender.send(c2d("dev1", "in-time")).await.unwrap(),
        Outcome::Accepted(_)
    ));
    hub.inject(Fault::ExpireServiceTokens).await.unwrap();
    match sender.send(c2d("dev1", "too-late")).await {
        Ok(Outcome::Rejected(r)) => assert!(
            format!("{:?}", r.error).contains("UnauthorizedAccess"),
            "{r:?}"
        ),
        other => panic!("expected an unauthorized rejection, got {other:?}"),
    }
    assert!(
        sender.send(c2d("dev1", "after")).await.is_err(),
        "the link is closed after the token expired"
    );
    assert_eq!(
        api.get("/devices/dev1").await.body["cloudToDeviceMessageCount"],
        1,
        "only the message sent in time was queued"
    );
    let _ = connection.close().await;
    hub.shutdown().await;
}

/// A policy token (`skn`) for `resource`.
fn policy_token(hub: &HubEndpoint, policy: &str, resource: &ResourceUri) -> String {
    let cs = ServiceConnectionString::parse(hub.connection_string(policy)).unwrap();
    SasToken::generate_with_ttl(resource, cs.key(), Some(policy), Duration::from_secs(600))
        .secret()
        .to_owned()
}

/// The error a link was refused with, as text: from a refused attach, or from the first use
/// of a link the hub detached at once.
async fn sender_refusal(
    session: &mut fe2o3_amqp::session::SessionHandle<()>,
    address: &str,
) -> String {
    match Sender::attach(session, format!("probe-{address}"), address).await {
        Err(e) => format!("{e:?}"),
        Ok(mut sender) => format!(
            "{:?}",
            sender
                .send(c2d("dev1", "probe"))
                .await
                .expect_err("an unserved link must not take messages")
        ),
    }
}

async fn receiver_refusal(
    session: &mut fe2o3_amqp::session::SessionHandle<()>,
    address: &str,
) -> String {
    match Receiver::attach(session, format!("probe-{address}"), address).await {
        Err(e) => format!("{e:?}"),
        Ok(mut receiver) => format!(
            "{:?}",
            tokio::time::timeout(Duration::from_secs(10), receiver.recv::<Body<Value>>())
                .await
                .expect("the hub detaches the link")
                .expect_err("an unserved link delivers nothing")
        ),
    }
}

/// One connection holds a grant per audience: a device audience's token does not authorize
/// the hub's links, the hub's does, and both coexist. An audience that is not this hub and a
/// token used for another device's audience are each refused with 401 and change nothing; a
/// device's own key grants its audience (for the device links), not the service links.
#[tokio::test]
async fn cbs_grants_are_kept_per_audience() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let api = RestClient::new(&ep, "iothubowner");
    let key = api.put("/devices/dev1", json!({})).await.body["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    api.put("/devices/dev2", json!({})).await;
    let mut connection = Connection::builder()
        .container_id("audiences")
        .hostname("localhost")
        .open_with_stream(tls(&ep).await)
        .await
        .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = Cbs::attach(&mut session).await;
    let mut sender = Sender::attach(&mut session, "c2d", "/messages/devicebound")
        .await
        .unwrap();
    let host = ep.hostname.clone();
    let owner = service_token(&ep, "iothubowner");

    // Not this hub, or not an IoT Hub resource: out of scope.
    assert_eq!(cbs.put_as("other-hub.example", &owner).await, 401);
    assert_eq!(cbs.put_as(&format!("{host}/queues/q1"), &owner).await, 401);
    // A device's audience, granted by a DeviceConnect policy token (Node's encoded form).
    let dev1 = policy_token(&ep, "device", &ResourceUri::device(&host, "dev1"));
    assert_eq!(
        cbs.put_as(&format!("{host}%2Fdevices%2Fdev1"), &dev1).await,
        200
    );
    // Device A's token for device B's audience: refused. Device A's own key: granted.
    assert_eq!(
        cbs.put_as(&format!("{host}/devices/dev2"), &dev1).await,
        401
    );
    let device_key = device_token(&ep, "dev1", None, &key, Duration::from_secs(600));
    assert_eq!(
        cbs.put_as(&format!("{host}/devices/dev1"), &device_key)
            .await,
        200
    );
    assert_eq!(
        cbs.put_as(&format!("{host}/devices/dev2"), &device_key)
            .await,
        401
    );
    // None of that authorizes the service links.
    match sender.send(c2d("dev1", "not-yet")).await.unwrap() {
        Outcome::Rejected(r) => assert!(
            format!("{:?}", r.error).contains("UnauthorizedAccess"),
            "{r:?}"
        ),
        other => panic!("expected a rejection, got {other:?}"),
    }
    // The hub's own audience (Python's `https://` form) does; the device grant stays.
    assert_eq!(cbs.put_as(&format!("https://{host}"), &owner).await, 200);
    let dev2 = policy_token(&ep, "device", &ResourceUri::device(&host, "dev2"));
    assert_eq!(
        cbs.put_as(&format!("{host}/devices/dev2"), &dev2).await,
        200
    );
    assert!(matches!(
        sender.send(c2d("dev1", "granted")).await.unwrap(),
        Outcome::Accepted(_)
    ));
    assert_eq!(
        api.get("/devices/dev1").await.body["cloudToDeviceMessageCount"],
        1,
        "only the message sent under the hub's grant was queued"
    );
    let _ = connection.close().await;
    hub.shutdown().await;
}

/// An address that is not IoT Hub's is refused with `amqp:not-found`; a hub address the
/// emulator does not serve over AMQP with `amqp:not-implemented`. The connection stays
/// usable.
#[tokio::test]
async fn unknown_addresses_are_not_found() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    RestClient::new(&ep, "iothubowner")
        .put("/devices/dev1", json!({}))
        .await;
    let mut connection = Connection::builder()
        .container_id("addresses")
        .hostname("localhost")
        .open_with_stream(tls(&ep).await)
        .await
        .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = Cbs::attach(&mut session).await;
    assert_eq!(cbs.put(&ep, &service_token(&ep, "iothubowner")).await, 200);

    for address in ["/messages/nonsense", "/devices/dev1/telemetry", "queue-1"] {
        let refusal = sender_refusal(&mut session, address).await;
        assert!(refusal.contains("NotFound"), "{address}: {refusal}");
    }
    let refusal = receiver_refusal(&mut session, "/messages/serviceBound/unknown").await;
    assert!(refusal.contains("NotFound"), "{refusal}");
    // A device link needs that device's token, which this connection does not hold.
    let refusal = sender_refusal(&mut session, "/devices/dev1/messages/events").await;
    assert!(refusal.contains("UnauthorizedAccess"), "{refusal}");
    let refusal = receiver_refusal(&mut session, "/devices/dev1/modules/m1/messages/events").await;
    assert!(refusal.contains("NotImplemented"), "{refusal}");

    // The connection still serves what it serves.
    let mut sender = Sender::attach(
        &mut session,
        "c2d",
        "amqps://localhost:5671/messages/deviceBound",
    )
    .await
    .unwrap();
    assert!(matches!(
        sender.send(c2d("dev1", "still-fine")).await.unwrap(),
        Outcome::Accepted(_)
    ));
    let _ = connection.close().await;
    hub.shutdown().await;
}

/// A put-token as Python's uamqp sends it (ulong message id, no `to` or `reply-to`,
/// `https://` audience) is answered with the correlation id of the same AMQP type, read by
/// the shared CBS code; a message that is not a put-token is answered 400, not ignored.
#[tokio::test]
async fn put_token_answers_keep_the_type_of_the_message_id() {
    use azure_iot_protocol::amqp::{PutToken, PutTokenAnswer};
    use fe2o3_amqp_types::messaging::MessageId;

    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let mut connection = Connection::builder()
        .container_id("uamqp-style")
        .hostname("localhost")
        .open_with_stream(tls(&ep).await)
        .await
        .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = Cbs::attach(&mut session).await;
    let mut request = PutToken::new(
        format!("https://{}", ep.hostname),
        service_token(&ep, "iothubowner"),
        0u64,
    );
    request.reply_to = None;
    let mut message = request.to_message();
    message.properties.as_mut().unwrap().to = None;
    cbs.requests.send(message).await.unwrap();
    let mut not_a_put = PutToken::new(ep.hostname.as_str(), "x", 1u64).to_message();
    not_a_put
        .application_properties
        .as_mut()
        .unwrap()
        .insert("operation".into(), "list-tokens".into());
    cbs.requests.send(not_a_put).await.unwrap();

    let mut answers = Vec::new();
    for _ in 0..2 {
        let answer =
            tokio::time::timeout(Duration::from_secs(10), cbs.answers.recv::<Body<Value>>())
                .await
                .expect("a CBS answer within 10 s")
                .unwrap();
        cbs.answers.accept(&answer).await.unwrap();
        answers.push(PutTokenAnswer::parse(&answer.into_message()).unwrap());
    }
    assert_eq!(answers[0].correlation_id, Some(MessageId::Ulong(0)));
    assert_eq!(answers[0].status_code, 200);
    assert_eq!(answers[1].correlation_id, Some(MessageId::Ulong(1)));
    assert_eq!(answers[1].status_code, 400, "{}", answers[1].description);
    let _ = connection.close().await;
    hub.shutdown().await;
}

/// Malformed frame headers (size below the 8-byte header, data offset below 2) end the
/// connection without panicking anything (fe2o3's decoder panicked on a size of 4, right after
/// the protocol header, before any authentication), and the next client is served.
#[tokio::test]
async fn malformed_frame_headers_close_the_connection_without_a_panic() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));

    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    for (header, frame) in [
        (&b"AMQP\x00\x01\x00\x00"[..], [0u8, 0, 0, 4, 2, 0, 0, 0]),
        (&b"AMQP\x03\x01\x00\x00"[..], [0u8, 0, 0, 4, 2, 1, 0, 0]),
        (&b"AMQP\x00\x01\x00\x00"[..], [0u8, 0, 0, 16, 1, 0, 0, 0]),
    ] {
        let mut stream = tls(&ep).await;
        stream.write_all(header).await.unwrap();
        stream.write_all(&frame).await.unwrap();
        stream.flush().await.unwrap();
        let mut sink = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "the connection was closed");
    }
    // A well-behaved service still connects.
    let mut connection = Connection::builder()
        .container_id("after-garbage")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Anonymous)
        .open_with_stream(tls(&ep).await)
        .await
        .unwrap();
    connection.close().await.unwrap();
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "no task panicked");
}

/// A Node-style service connection (no SASL) and a session on it.
async fn service_session(
    ep: &HubEndpoint,
) -> (
    fe2o3_amqp::connection::ConnectionHandle<()>,
    fe2o3_amqp::session::SessionHandle<()>,
) {
    let mut connection = Connection::builder()
        .container_id("test-service")
        .hostname("localhost")
        .open_with_stream(tls(ep).await)
        .await
        .unwrap();
    let session = Session::begin(&mut connection).await.unwrap();
    (connection, session)
}

/// The next delivery on `receiver`, within 10 s.
async fn next_delivery(
    receiver: &mut Receiver,
) -> fe2o3_amqp::link::delivery::Delivery<Body<Value>> {
    tokio::time::timeout(Duration::from_secs(10), receiver.recv::<Body<Value>>())
        .await
        .unwrap()
        .unwrap()
}

/// The data sections of a message, joined.
fn data_body(message: &Message<Body<Value>>) -> Vec<u8> {
    match &message.body {
        Body::Data(batch) => batch.iter().flat_map(|d| d.0.to_vec()).collect(),
        other => panic!("expected data sections, got {other:?}"),
    }
}

#[tokio::test]
async fn file_notifications_come_one_a_message_and_released_ones_come_back() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let api = RestClient::new(&ep, "iothubowner");
    let key = api.register_device("dev1").await;
    let device = azure_iot_test::DeviceHttp::new(&ep, "dev1", None, &key);
    device.upload_file(&ep, "dev1", "one.txt", b"first").await;
    device.upload_file(&ep, "dev1", "two.txt", b"second!").await;

    let (_connection, mut session) = service_session(&ep).await;
    // Without a token the link is refused.
    let mut early = Receiver::attach(
        &mut session,
        "early",
        "/messages/serviceBound/filenotifications",
    )
    .await
    .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), early.recv::<Body<Value>>())
            .await
            .unwrap()
            .is_err()
    );
    let mut cbs = Cbs::attach(&mut session).await;
    assert_eq!(cbs.put(&ep, &service_token(&ep, "service")).await, 200);
    let mut notifications = Receiver::attach(
        &mut session,
        "files",
        "/messages/serviceBound/filenotifications",
    )
    .await
    .unwrap();
    let first = next_delivery(&mut notifications).await;
    let message = first.message().clone();
    assert_eq!(
        message
            .properties
            .as_ref()
            .and_then(|p| p.content_type.clone())
            .map(|c| c.0),
        Some("application/vnd.microsoft.iothub.filenotification.json".to_owned())
    );
    let record: serde_json::Value = serde_json::from_slice(&data_body(&message)).unwrap();
    assert_eq!(record["deviceId"], "dev1");
    assert_eq!(record["blobName"], "dev1/one.txt");
    assert_eq!(record["blobSizeInBytes"], 5);
    assert_eq!(
        record["blobUri"],
        format!(
            "https://localhost:{}/fileuploads/dev1/one.txt",
            hub.blob_addr().port()
        )
    );
    assert!(record["lastUpdatedTime"].is_string());
    assert!(record["enqueuedTimeUtc"].is_string());
    // Released (abandoned): it comes back before the second one.
    notifications.release(&first).await.unwrap();
    let again = next_delivery(&mut notifications).await;
    let record: serde_json::Value = serde_json::from_slice(&data_body(again.message())).unwrap();
    assert_eq!(record["blobName"], "dev1/one.txt");
    notifications.accept(&again).await.unwrap();
    let second = next_delivery(&mut notifications).await;
    let record: serde_json::Value = serde_json::from_slice(&data_body(second.message())).unwrap();
    assert_eq!(record["blobName"], "dev1/two.txt");
    assert_eq!(record["blobSizeInBytes"], 7);
    notifications.accept(&second).await.unwrap();
    hub.shutdown().await;
}
