//! Devices over MQTT 3.1.1 on real TLS sockets: authentication, telemetry into the durable
//! log, twins, desired-property pushes, direct methods, sessions, ACLs and refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_protocol::mqtt::codec::{ConnectReturnCode, Packet, QoS, SubscribeReasonCode};
use azure_iot_test::{HubEndpoint, MqttClient, RestClient, device_token, emulator, http_client};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const HOUR: Duration = Duration::from_secs(3600);

async fn connected(hub: &HubEndpoint, device: &str, key: &str) -> MqttClient {
    let token = device_token(hub, device, None, key, HOUR);
    let (client, ack) = MqttClient::connect(hub, device, &token, true, 60).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    client
}

#[tokio::test]
async fn telemetry_is_logged_with_properties_before_the_puback() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    let mut device = connected(&ep, "dev1", &key).await;
    // The Python SDK's exact topic for a message with system and custom properties.
    let topic = "devices/dev1/messages/events/%24.mid=mid-1&%24.cid=cid-1&%24.ct=application%2Fjson&%24.ce=utf-8&%24.exp=2033-05-18T03%3A33%3A20%2B00%3A00&p1=v1";
    let pkid = device
        .publish(topic, r#"{"temperature":21.5}"#, QoS::AtLeastOnce)
        .await;
    match device.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.pkid, pkid),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // QoS 0 is accepted too (no PUBACK), and a retained publish is marked, not retained.
    device
        .publish("devices/dev1/messages/events/", "plain", QoS::AtMostOnce)
        .await;
    let mut retained = azure_iot_protocol::mqtt::codec::Publish::new(
        "devices/dev1/messages/events/",
        QoS::AtLeastOnce,
        b"r".to_vec(),
    );
    retained.retain = true;
    retained.pkid = device.pkid();
    device.send(Packet::Publish(retained)).await;
    assert!(matches!(device.recv().await, Some(Packet::PubAck(_))));

    let events = hub.telemetry(0, 10).await.unwrap();
    assert_eq!(events.len(), 3);
    let first = &events[0];
    assert_eq!(first.device_id, "dev1");
    assert_eq!(first.message.body().as_ref(), br#"{"temperature":21.5}"#);
    let s = first.message.system_properties();
    assert_eq!(s.message_id.as_deref(), Some("mid-1"));
    assert_eq!(s.correlation_id.as_deref(), Some("cid-1"));
    assert_eq!(s.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        s.expiry_time_utc.map(|t| t.unix_timestamp()),
        Some(2_000_000_000)
    );
    assert_eq!(s.connection_device_id.as_deref(), Some("dev1"));
    assert_eq!(s.connection_auth_method.as_deref(), Some("sas"));
    assert_eq!(first.message.property("p1"), Some("v1"));
    assert_eq!(events[1].message.body().as_ref(), b"plain");
    assert_eq!(events[2].message.property("mqtt-retain"), Some("true"));
    assert!(
        events
            .windows(2)
            .all(|w| w[0].sequence_number < w[1].sequence_number)
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn module_outputs_are_logged_as_the_module() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    c.register_device("d").await;
    let m = c.put("/devices/d/modules/m", json!({})).await;
    let key = m.body["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = device_token(&ep, "d", Some("m"), &key, HOUR);
    let (mut module, ack) = MqttClient::connect(&ep, "d/m", &token, true, 60).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    // Node's form, with the trailing slash.
    module
        .publish(
            "devices/d/modules/m/messages/events/%24.on=out1&%24.mid=m1/",
            "x",
            QoS::AtLeastOnce,
        )
        .await;
    assert!(matches!(module.recv().await, Some(Packet::PubAck(_))));
    let events = hub.telemetry(0, 10).await.unwrap();
    assert_eq!(events[0].module_id.as_deref(), Some("m"));
    assert_eq!(
        events[0].message.system_properties().output_name.as_deref(),
        Some("out1")
    );
    assert_eq!(
        events[0]
            .message
            .system_properties()
            .connection_module_id
            .as_deref(),
        Some("m")
    );

    // Module twins and direct methods go through the same topics as a device's.
    module
        .subscribe("$iothub/twin/res/#", QoS::AtLeastOnce)
        .await;
    module
        .subscribe("$iothub/methods/POST/#", QoS::AtLeastOnce)
        .await;
    module
        .publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=1",
            r#"{"state":"ok"}"#,
            QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(
        module.next_publish().await.topic,
        "$iothub/twin/res/204/?$rid=1&$version=2"
    );
    assert_eq!(
        c.get("/twins/d/modules/m").await.body["properties"]["reported"]["state"],
        "ok"
    );
    let service = c.clone();
    let call = tokio::spawn(async move {
        service
            .request(
                Method::POST,
                "/twins/d/modules/m/methods",
                Some(json!({"methodName": "restart", "responseTimeoutInSeconds": 10})),
                &[],
            )
            .await
    });
    let request = module.next_publish().await;
    assert!(
        request
            .topic
            .starts_with("$iothub/methods/POST/restart/?$rid="),
        "{}",
        request.topic
    );
    let rid = request.topic.rsplit("$rid=").next().unwrap().to_owned();
    module
        .publish(
            &format!("$iothub/methods/res/200/?$rid={rid}"),
            r#""done""#,
            QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(
        call.await.unwrap().body,
        json!({"status": 200, "payload": "done"})
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn connects_are_refused_with_the_hubs_codes() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    c.put("/devices/off", json!({"status": "disabled"})).await;
    let other_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let cases = [
        (
            "unknown device",
            "ghost",
            device_token(&ep, "ghost", None, &key, HOUR),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "wrong key",
            "dev1",
            device_token(&ep, "dev1", None, other_key, HOUR),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "expired",
            "dev1",
            device_token(&ep, "dev1", None, &key, Duration::ZERO),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "token for another device",
            "dev1",
            device_token(&ep, "off", None, &key, HOUR),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "not a token",
            "dev1",
            "hunter2".to_owned(),
            ConnectReturnCode::NotAuthorized,
        ),
    ];
    for (why, client_id, token, code) in cases {
        let (mut client, ack) = MqttClient::connect(&ep, client_id, &token, true, 60).await;
        assert_eq!(ack.code, code, "{why}");
        client.expect_closed().await;
    }
    let off = c.get("/devices/off").await.body["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, ack) = MqttClient::connect(
        &ep,
        "off",
        &device_token(&ep, "off", None, &off, HOUR),
        true,
        60,
    )
    .await;
    assert_eq!(
        ack.code,
        ConnectReturnCode::NotAuthorized,
        "disabled device"
    );
    // User name that names someone else, or another hub.
    let token = device_token(&ep, "dev1", None, &key, HOUR);
    let (_, ack) = MqttClient::connect_as(
        &ep,
        "dev1",
        "localhost/other/?api-version=2021-04-12",
        &token,
        true,
        60,
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::BadUserNamePassword);
    let (_, ack) = MqttClient::connect_as(
        &ep,
        "dev1",
        "elsewhere.net/dev1/?api-version=2021-04-12",
        &token,
        true,
        60,
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    // A DPS registration's user name is classified as DPS, whose front-end answers: an id
    // scope it does not have (and a hub token) is not authorized.
    let (_, ack) = MqttClient::connect_as(
        &ep,
        "dev1",
        "0ne00000001/registrations/dev1/api-version=2019-03-31",
        &token,
        true,
        60,
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);

    // A token made from a policy that grants DeviceConnect is accepted; one without it is not.
    let policy_token = |policy: &str| {
        let cs =
            azure_iot_core::ServiceConnectionString::parse(hub.connection_string(policy).unwrap())
                .unwrap();
        azure_iot_core::SasToken::generate_with_ttl(
            &azure_iot_core::ResourceUri::device(hub.hostname(), "dev1"),
            cs.key(),
            Some(policy),
            HOUR,
        )
        .secret()
        .to_owned()
    };
    let (_, ack) = MqttClient::connect(&ep, "dev1", &policy_token("device"), true, 60).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let (_, ack) = MqttClient::connect(&ep, "dev1", &policy_token("registryRead"), true, 60).await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    hub.shutdown().await;
}

#[tokio::test]
async fn forbidden_traffic_ends_only_that_connection() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    c.register_device("dev2").await;
    enum Attempt {
        Publish(&'static str, Vec<u8>, QoS),
        Subscribe(&'static str),
    }
    let attempts = [
        (
            "another device's telemetry",
            Attempt::Publish(
                "devices/dev2/messages/events/",
                b"x".to_vec(),
                QoS::AtLeastOnce,
            ),
        ),
        (
            "QoS 2",
            Attempt::Publish(
                "devices/dev1/messages/events/",
                b"x".to_vec(),
                QoS::ExactlyOnce,
            ),
        ),
        (
            "a topic IoT Hub does not have",
            Attempt::Publish("random/topic", b"x".to_vec(), QoS::AtLeastOnce),
        ),
        (
            "over 256 KiB",
            Attempt::Publish(
                "devices/dev1/messages/events/",
                vec![b'x'; 256 * 1024 + 1],
                QoS::AtLeastOnce,
            ),
        ),
        (
            "another device's C2D",
            Attempt::Subscribe("devices/dev2/messages/devicebound/#"),
        ),
        ("a wildcard subscription", Attempt::Subscribe("#")),
    ];
    for (why, attempt) in attempts {
        let mut device = connected(&ep, "dev1", &key).await;
        match attempt {
            Attempt::Publish(topic, payload, qos) => {
                device.publish(topic, payload, qos).await;
            }
            Attempt::Subscribe(filter) => {
                let mut subscribe =
                    azure_iot_protocol::mqtt::codec::Subscribe::new(filter, QoS::AtLeastOnce);
                subscribe.pkid = device.pkid();
                device.send(Packet::Subscribe(subscribe)).await;
            }
        }
        assert_eq!(
            device.recv().await,
            None,
            "{why}: the connection must close"
        );
    }
    // The hub is fine: a well-behaved connection still works.
    let mut device = connected(&ep, "dev1", &key).await;
    device
        .publish("devices/dev1/messages/events/", "ok", QoS::AtLeastOnce)
        .await;
    assert!(
        matches!(device.recv().await, Some(Packet::PubAck(_))),
        "hub still serves"
    );
    assert_eq!(
        hub.telemetry(0, 10).await.unwrap().len(),
        1,
        "nothing refused was logged"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn twin_get_reported_patch_and_desired_push() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    let mut device = connected(&ep, "dev1", &key).await;
    for filter in [
        "$iothub/twin/res/#",
        "$iothub/twin/PATCH/properties/desired/#",
    ] {
        match device.subscribe(filter, QoS::AtLeastOnce).await {
            Packet::SubAck(ack) => assert_eq!(
                ack.return_codes,
                vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
            ),
            other => panic!("{other:?}"),
        }
    }
    // GET: Python and Node send one space as the body.
    device
        .publish("$iothub/twin/GET/?$rid=r1", " ", QoS::AtMostOnce)
        .await;
    let res = device.next_publish().await;
    assert_eq!(res.topic, "$iothub/twin/res/200/?$rid=r1");
    let twin: Value = serde_json::from_slice(&res.payload).unwrap();
    assert_eq!(
        twin,
        json!({"desired": {"$version": 1}, "reported": {"$version": 1}})
    );

    device
        .publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=r2",
            r#"{"temperature": 21.5, "nested": {"a": null}}"#,
            QoS::AtLeastOnce,
        )
        .await;
    let res = device.next_publish().await;
    assert_eq!(res.topic, "$iothub/twin/res/204/?$rid=r2&$version=2");
    assert!(res.payload.is_empty());
    let service_view = c.get("/twins/dev1").await.body;
    assert_eq!(service_view["properties"]["reported"]["temperature"], 21.5);
    assert_eq!(service_view["properties"]["reported"]["$version"], 2);

    // A bad patch is a 400 with an error body carrying a non-zero errorCode (Node reads it).
    device
        .publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=r3",
            "{nope",
            QoS::AtLeastOnce,
        )
        .await;
    let res = device.next_publish().await;
    assert_eq!(res.topic, "$iothub/twin/res/400/?$rid=r3");
    let body: Value = serde_json::from_slice(&res.payload).unwrap();
    assert_eq!(body["errorCode"], 400004);

    // The service changes desired properties: the device gets the patch with its version.
    c.request(
        Method::PATCH,
        "/twins/dev1",
        Some(json!({"properties": {"desired": {"fan": true}}})),
        &[],
    )
    .await;
    let patch = device.next_publish().await;
    assert_eq!(
        patch.topic,
        "$iothub/twin/PATCH/properties/desired/?$version=2"
    );
    let body: Value = serde_json::from_slice(&patch.payload).unwrap();
    assert_eq!(body, json!({"fan": true, "$version": 2}));
    // Replace: keys that disappeared arrive as null.
    c.request(
        Method::PUT,
        "/twins/dev1",
        Some(json!({"properties": {"desired": {"mode": "eco"}}})),
        &[],
    )
    .await;
    let patch = device.next_publish().await;
    let body: Value = serde_json::from_slice(&patch.payload).unwrap();
    assert_eq!(body, json!({"mode": "eco", "fan": null, "$version": 3}));
    hub.shutdown().await;
}

#[tokio::test]
async fn direct_method_round_trip_through_rest_and_mqtt() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    let mut device = connected(&ep, "dev1", &key).await;
    device
        .subscribe("$iothub/methods/POST/#", QoS::AtMostOnce)
        .await;
    let service = c.clone();
    let call = tokio::spawn(async move {
        service
            .request(
                Method::POST,
                "/twins/dev1/methods",
                Some(json!({"methodName": "reboot", "payload": {"delay": 5}, "responseTimeoutInSeconds": 10})),
                &[],
            )
            .await
    });
    let request = device.next_publish().await;
    let rid = request
        .topic
        .strip_prefix("$iothub/methods/POST/reboot/?$rid=")
        .expect("method topic")
        .to_owned();
    assert_eq!(
        serde_json::from_slice::<Value>(&request.payload).unwrap(),
        json!({"delay": 5})
    );
    device
        .publish(
            &format!("$iothub/methods/res/201/?$rid={rid}"),
            r#"{"result":"ok"}"#,
            QoS::AtMostOnce,
        )
        .await;
    let answer = call.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body,
        json!({"status": 201, "payload": {"result": "ok"}})
    );
    assert_eq!(
        c.get("/statistics/service").await.body["connectedDeviceCount"],
        1
    );
    assert_eq!(
        c.get("/devices/dev1").await.body["connectionState"],
        "Connected"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_new_connection_replaces_the_old_one_and_sessions_persist() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    let token = device_token(&ep, "dev1", None, &key, HOUR);
    let (mut first, ack) = MqttClient::connect(&ep, "dev1", &token, false, 60).await;
    assert!(!ack.session_present);
    first
        .subscribe("$iothub/methods/POST/#", QoS::AtLeastOnce)
        .await;
    let (mut second, ack) = MqttClient::connect(&ep, "dev1", &token, false, 60).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert!(
        ack.session_present,
        "clean session 0 keeps the subscriptions"
    );
    first.expect_closed().await;
    // The kept method subscription works on the new connection without resubscribing.
    let service = c.clone();
    let call = tokio::spawn(async move {
        service
            .request(
                Method::POST,
                "/twins/dev1/methods",
                Some(json!({"methodName": "ping", "responseTimeoutInSeconds": 10})),
                &[],
            )
            .await
    });
    let request = second.next_publish().await;
    let rid = request.topic.rsplit("$rid=").next().unwrap().to_owned();
    second
        .publish(
            &format!("$iothub/methods/res/200/?$rid={rid}"),
            "null",
            QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(
        call.await.unwrap().body,
        json!({"status": 200, "payload": null})
    );
    // A clean session forgets them.
    drop(second);
    let (_, ack) = MqttClient::connect(&ep, "dev1", &token, true, 60).await;
    assert!(!ack.session_present);
    hub.shutdown().await;
}

#[tokio::test]
async fn silent_clients_and_expired_tokens_are_disconnected() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    // Keep-alive 1 s: the hub waits 1.5 s for a packet, then closes.
    let token = device_token(&ep, "dev1", None, &key, HOUR);
    let (mut quiet, _) = MqttClient::connect(&ep, "dev1", &token, true, 1).await;
    let started = std::time::Instant::now();
    quiet.expect_closed().await;
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    // A token that expires in 2 s ends the connection then, even while the client pings.
    let short = device_token(&ep, "dev1", None, &key, Duration::from_secs(2));
    let (mut client, ack) = MqttClient::connect(&ep, "dev1", &short, true, 60).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    client.send(Packet::PingReq).await;
    assert_eq!(client.recv().await, Some(Packet::PingResp));
    client.expect_closed().await;
    hub.shutdown().await;
}

/// A WebSocket to `/$iothub/websocket` with `subprotocol`, over TLS, and the server's answer.
async fn websocket(
    hub: &azure_iot_emulator::EmulatorHandle,
    subprotocol: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let tls = {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(hub.ca_pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
    };
    let tcp = tokio::net::TcpStream::connect(hub.https_addr())
        .await
        .unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut request = "wss://localhost/$iothub/websocket?iothub-no-client-cert=true"
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", subprotocol.parse().unwrap());
    tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap()
}

/// A client that never authenticates cannot make the hub buffer a large WebSocket message:
/// a frame that declares more than the limit ends the connection at once (without the limit
/// the hub waited for the payload until the 10 s CONNECT deadline, holding what came).
#[tokio::test]
async fn websocket_messages_are_bounded() {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;

    let hub = emulator().await;
    for subprotocol in ["mqtt", "AMQPWSB10"] {
        let (mut ws, _) = websocket(&hub, subprotocol).await;
        // A masked binary frame declaring 600 KiB, and only the first bytes of it.
        let mut frame = vec![0x82, 0xff];
        frame.extend_from_slice(&(600u64 * 1024).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend_from_slice(&[0u8; 1024]);
        ws.get_mut().write_all(&frame).await.unwrap();
        ws.get_mut().flush().await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    None
                    | Some(Err(_))
                    | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "{subprotocol}: the oversized frame ended the connection"
        );
    }
    // The hub still serves WebSocket clients.
    let (_ws, response) = websocket(&hub, "mqtt").await;
    assert_eq!(response.headers()["sec-websocket-protocol"], "mqtt");
}

#[tokio::test]
async fn mqtt_over_websockets_on_the_https_port() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("wsdev").await;

    // The Java SDK's query string is ignored; the C SDK's upper-case subprotocol is accepted
    // and echoed exactly.
    let (mut ws, response) = websocket(&hub, "MQTT").await;
    assert_eq!(response.headers()["sec-websocket-protocol"], "MQTT");

    let token = device_token(&ep, "wsdev", None, &key, HOUR);
    let mut connect = azure_iot_protocol::mqtt::codec::Connect::new("wsdev");
    connect.keep_alive = 60;
    connect.set_login(
        format!("{}/wsdev/?api-version=2021-04-12", hub.hostname()),
        token,
    );
    let mut publish = azure_iot_protocol::mqtt::codec::Publish::new(
        "devices/wsdev/messages/events/",
        QoS::AtLeastOnce,
        b"over ws".to_vec(),
    );
    publish.pkid = 9;
    let mut bytes = bytes::BytesMut::new();
    azure_iot_protocol::mqtt::codec::write_packet(&Packet::Connect(connect), &mut bytes).unwrap();
    azure_iot_protocol::mqtt::codec::write_packet(&Packet::Publish(publish), &mut bytes).unwrap();
    // Frames need not align with packets: send the bytes in three arbitrary slices.
    let third = bytes.len() / 3;
    for chunk in [
        &bytes[..third],
        &bytes[third..2 * third],
        &bytes[2 * third..],
    ] {
        ws.send(Message::Binary(bytes::Bytes::copy_from_slice(chunk)))
            .await
            .unwrap();
    }
    let mut received = bytes::BytesMut::new();
    let mut packets = Vec::new();
    while packets.len() < 2 {
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(b) => received.extend_from_slice(&b),
            other => panic!("unexpected frame {other:?}"),
        }
        while let Some(p) =
            azure_iot_protocol::mqtt::codec::read_packet(&mut received, 1 << 20).unwrap()
        {
            packets.push(p);
        }
    }
    assert!(matches!(&packets[0], Packet::ConnAck(a) if a.code == ConnectReturnCode::Success));
    assert!(matches!(&packets[1], Packet::PubAck(a) if a.pkid == 9));
    assert_eq!(
        hub.telemetry(0, 10).await.unwrap()[0]
            .message
            .body()
            .as_ref(),
        b"over ws"
    );

    // Unknown subprotocols are refused with a 400 that says which ones exist.
    let plain = http_client(&ep);
    let refused = plain
        .get(format!(
            "https://localhost:{}/$iothub/websocket",
            hub.https_addr().port()
        ))
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Protocol", "stomp")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    hub.shutdown().await;
}

use azure_iot_test::self_signed_device_certificate as device_certificate;

#[tokio::test]
async fn x509_self_signed_devices_authenticate_by_thumbprint() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let (cert, key, thumbprint) = device_certificate("x509dev");
    let r = c
        .put(
            "/devices/x509dev",
            json!({"authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": thumbprint, "secondaryThumbprint": null}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // The registered certificate, no password: accepted, and telemetry is stamped x509.
    let client = MqttClient::open_with_certificate(&ep, vec![cert.clone()], key.clone_key()).await;
    let (mut device, ack) = client.connect_x509(&ep, "x509dev").await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let pkid = device
        .publish(
            "devices/x509dev/messages/events/",
            "signed",
            QoS::AtLeastOnce,
        )
        .await;
    assert!(matches!(device.recv().await, Some(Packet::PubAck(a)) if a.pkid == pkid));
    let events = hub.telemetry(0, 10).await.unwrap();
    assert_eq!(
        events[0]
            .message
            .system_properties()
            .connection_auth_method
            .as_deref(),
        Some("x509")
    );

    // Another certificate, no certificate, or a SAS device with a certificate: refused.
    let (other, other_key, _) = device_certificate("x509dev");
    let (_, ack) = MqttClient::open_with_certificate(&ep, vec![other], other_key)
        .await
        .connect_x509(&ep, "x509dev")
        .await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    let (_, ack) = MqttClient::open(&ep)
        .await
        .connect_x509(&ep, "x509dev")
        .await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    c.register_device("sasdev").await;
    let (_, ack) = MqttClient::open_with_certificate(&ep, vec![cert], key)
        .await
        .connect_x509(&ep, "sasdev")
        .await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    hub.shutdown().await;
}

#[tokio::test]
async fn x509_ca_signed_devices_chain_to_a_registered_ca_and_name_themselves() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let make_ca = |name: &str| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), rcgen::Issuer::new(params, key))
    };
    let leaf = |cn: &str, issuer: &rcgen::Issuer<'_, rcgen::KeyPair>| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        (
            cert.der().clone(),
            rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
    };
    let (ca_pem, ca) = make_ca("fleet CA");
    let (_, stranger_ca) = make_ca("someone else's CA");

    let registered = c
        .put(
            "/certificates/fleet",
            json!({"properties": {"certificate": ca_pem}}),
        )
        .await;
    assert_eq!(registered.status, StatusCode::OK, "{:?}", registered.body);
    assert_eq!(registered.body["properties"]["isVerified"], true);
    assert!(
        registered.body["properties"]["subject"]
            .as_str()
            .unwrap()
            .contains("fleet CA")
    );
    assert_eq!(
        c.get("/certificates").await.body["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        c.put(
            "/certificates/bad",
            json!({"properties": {"certificate": "nope"}})
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
    c.put(
        "/devices/ca-dev",
        json!({"authentication": {"type": "certificateAuthority"}}),
    )
    .await;

    let (cert, key) = leaf("ca-dev", &ca);
    let (_, ack) = MqttClient::open_with_certificate(&ep, vec![cert], key)
        .await
        .connect_x509(&ep, "ca-dev")
        .await;
    assert_eq!(
        ack.code,
        ConnectReturnCode::Success,
        "signed by the registered CA, CN = device id"
    );

    let (cert, key) = leaf("someone-else", &ca);
    let (_, ack) = MqttClient::open_with_certificate(&ep, vec![cert], key)
        .await
        .connect_x509(&ep, "ca-dev")
        .await;
    assert_eq!(
        ack.code,
        ConnectReturnCode::NotAuthorized,
        "CN must be the device id"
    );

    let (cert, key) = leaf("ca-dev", &stranger_ca);
    let (_, ack) = MqttClient::open_with_certificate(&ep, vec![cert], key)
        .await
        .connect_x509(&ep, "ca-dev")
        .await;
    assert_eq!(
        ack.code,
        ConnectReturnCode::NotAuthorized,
        "an unregistered CA is not trusted"
    );

    // Removing the CA revokes the trust.
    assert_eq!(
        c.delete("/certificates/fleet").await.status,
        StatusCode::NO_CONTENT
    );
    let (cert, key) = leaf("ca-dev", &ca);
    let (_, ack) = MqttClient::open_with_certificate(&ep, vec![cert], key)
        .await
        .connect_x509(&ep, "ca-dev")
        .await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    hub.shutdown().await;
}

/// `connectionStateUpdatedTime` and `lastActivityTime` follow connects, telemetry and
/// disconnects, in the identity and in the twin.
#[tokio::test]
async fn connection_and_activity_times_are_kept() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("active").await;
    let never = "0001-01-01T00:00:00Z";
    let before = c.get("/devices/active").await.body;
    assert_eq!(before["connectionStateUpdatedTime"], never);
    assert_eq!(before["lastActivityTime"], never);

    let mut device = connected(&ep, "active", &key).await;
    let pkid = device
        .publish("devices/active/messages/events/", "hi", QoS::AtLeastOnce)
        .await;
    assert!(matches!(device.recv().await, Some(Packet::PubAck(a)) if a.pkid == pkid));
    let online = c.get("/devices/active").await.body;
    assert_eq!(online["connectionState"], "Connected");
    let connected_at = online["connectionStateUpdatedTime"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(connected_at, never);
    assert!(online["lastActivityTime"].as_str().unwrap() >= connected_at.as_str());
    let twin = c.get("/twins/active").await.body;
    assert_eq!(twin["lastActivityTime"], online["lastActivityTime"]);

    device.send(Packet::Disconnect).await;
    drop(device);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let offline = loop {
        let now = c.get("/devices/active").await.body;
        if now["connectionState"] == "Disconnected" {
            break now;
        }
        assert!(std::time::Instant::now() < deadline, "never disconnected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(offline["connectionStateUpdatedTime"].as_str().unwrap() >= connected_at.as_str());
    hub.shutdown().await;
}

/// MQTT 3.1.1 rules a broker enforces: a CONNECT for another protocol level gets CONNACK 0x01
/// (MQTT-3.1.2-2); a PUBLISH whose topic holds U+0000 ends the connection, unstored
/// (MQTT-1.5.3-2).
#[tokio::test]
async fn protocol_level_and_nul_topics_are_refused() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("rules").await;
    let token = device_token(&ep, "rules", None, &key, HOUR);

    let mut connect = azure_iot_protocol::mqtt::codec::Connect::new("rules");
    connect.set_login(
        format!("{}/rules/?api-version=2021-04-12", hub.hostname()),
        token.clone(),
    );
    let mut bytes = bytes::BytesMut::new();
    azure_iot_protocol::mqtt::codec::write_packet(&Packet::Connect(connect), &mut bytes).unwrap();
    let level = bytes.windows(4).position(|w| w == b"MQTT").unwrap() + 4;
    assert_eq!(bytes[level], 4);
    bytes[level] = 9;
    let mut client = MqttClient::open(&ep).await;
    client.send_raw(&bytes).await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.code, ConnectReturnCode::RefusedProtocolVersion)
        }
        other => panic!("expected CONNACK 0x01, got {other:?}"),
    }
    client.expect_closed().await;

    let (mut device, ack) = MqttClient::connect(&ep, "rules", &token, true, 60).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    device
        .publish(
            "devices/rules/messages/events/a=\u{0}",
            "nul",
            QoS::AtLeastOnce,
        )
        .await;
    device.expect_closed().await;
    assert!(hub.telemetry(0, 10).await.unwrap().is_empty(), "not stored");
}
