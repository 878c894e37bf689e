//! The Device Provisioning Service's device front-ends over MQTT, MQTT over WebSockets, AMQP
//! and AMQP over WebSockets, at wire level, against the in-process emulator with real TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use azure_iot_core::sas::{ResourceUri, SasToken, SharedAccessKey};
use azure_iot_protocol::mqtt::codec::{Connect, ConnectReturnCode, Packet};
use azure_iot_test::{HubEndpoint, MqttClient, emulator, websocket_stream};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::{Connection, Receiver, Sender, Session};

/// An id scope no DPS has.
const FOREIGN_SCOPE: &str = "0ne99999999";

/// The DPS MQTT user name the SDKs send.
fn dps_username(scope: &str, registration_id: &str) -> String {
    format!("{scope}/registrations/{registration_id}/api-version=2019-03-31&ClientVersion=test%2F1")
}

/// A DPS SAS token for `registration_id` signed with `key` (`skn=registration`).
fn dps_token(scope: &str, registration_id: &str, key: &str) -> String {
    let key = SharedAccessKey::from_base64(key).unwrap();
    SasToken::generate_with_ttl(
        &ResourceUri::dps_registration(scope, registration_id),
        &key,
        Some("registration"),
        Duration::from_secs(3600),
    )
    .secret()
    .to_owned()
}

/// Sends a DPS CONNECT over `client`; returns the CONNACK code.
async fn dps_connect(
    client: &mut MqttClient,
    client_id: &str,
    username: &str,
    password: &str,
) -> ConnectReturnCode {
    let mut connect = Connect::new(client_id);
    connect.keep_alive = 60;
    connect.set_login(username, password);
    client.send(Packet::Connect(connect)).await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => ack.code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// A DPS device with neither a SAS token nor a certificate is not authorized, and the
/// connection closes; a client id that is not the user name's registration id is refused.
#[tokio::test]
async fn mqtt_connect_without_credentials_or_with_a_foreign_client_id_is_refused() {
    let hub = emulator().await;
    let ep = endpoint(&hub);
    let scope = hub.dps_id_scope().to_owned();
    let scope = scope.as_str();

    let mut client = MqttClient::open(&ep).await;
    let code = dps_connect(&mut client, "reg1", &dps_username(scope, "reg1"), "").await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    client.expect_closed().await;

    let mut client = MqttClient::open(&ep).await;
    let token = dps_token(
        scope,
        "reg1",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let code = dps_connect(&mut client, "other", &dps_username(scope, "reg1"), &token).await;
    assert_eq!(code, ConnectReturnCode::BadClientId);
    client.expect_closed().await;
    hub.shutdown().await;
}

/// C#'s DPS clients open their WebSocket at `/`: the upgrade there reaches the same MQTT code
/// (a DPS CONNECT gets its DPS answer), while a plain `GET /` is still an unknown path.
#[tokio::test]
async fn websocket_upgrades_at_the_root_path_reach_dps() {
    let hub = emulator().await;
    let ep = endpoint(&hub);
    let scope = hub.dps_id_scope().to_owned();
    let scope = scope.as_str();
    for path in ["/", "/$iothub/websocket"] {
        let stream = websocket_stream(&ep, path, "mqtt", ep.tls_config()).await;
        let mut client = MqttClient::over(stream);
        let code = dps_connect(&mut client, "reg1", &dps_username(scope, "reg1"), "").await;
        assert_eq!(code, ConnectReturnCode::NotAuthorized, "{path}");
    }
    let plain = azure_iot_test::http_client(&ep)
        .get(format!("https://localhost:{}/", ep.https_addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 404);
    hub.shutdown().await;
}

async fn tls(
    ep: &HubEndpoint,
    config: rustls::ClientConfig,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(ep.amqp_addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

/// Over AMQP, a DPS link on a connection with neither a SASL PLAIN login nor a certificate
/// is refused (detached) with `amqp:unauthorized-access`.
#[tokio::test]
async fn amqp_dps_links_without_credentials_are_refused() {
    let hub = emulator().await;
    let ep = endpoint(&hub);
    let scope = hub.dps_id_scope().to_owned();
    let scope = scope.as_str();
    let mut connection = Connection::builder()
        .container_id("dps-anonymous")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Anonymous)
        .open_with_stream(tls(&ep, ep.tls_config()).await)
        .await
        .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let address = format!("{scope}/registrations/reg1");
    let refused = match Receiver::attach(&mut session, "answers", address.as_str()).await {
        Err(e) => format!("{e:?}"),
        Ok(mut receiver) => format!(
            "{:?}",
            receiver
                .recv::<fe2o3_amqp_types::messaging::Body<fe2o3_amqp_types::primitives::Value>>()
                .await
                .expect_err("the link is detached")
        ),
    };
    assert!(refused.contains("UnauthorizedAccess"), "{refused}");
    let _ = Sender::attach(&mut session, "requests", address.as_str()).await;
    let _ = connection.close().await;
    hub.shutdown().await;
}

/// Runs a SASL exchange by hand on the AMQP port with `mechanism` and `initial_response`;
/// returns the outcome code.
async fn raw_sasl(
    ep: &HubEndpoint,
    mechanism: &str,
    initial_response: &[u8],
) -> fe2o3_amqp_types::sasl::SaslCode {
    use fe2o3_amqp::frames::sasl::Frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tls(ep, ep.tls_config()).await;
    stream.write_all(b"AMQP\x03\x01\x00\x00").await.unwrap();
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await.unwrap();
    assert_eq!(&header, b"AMQP\x03\x01\x00\x00");
    assert!(matches!(
        support::read_sasl(&mut stream).await,
        Frame::Mechanisms(_)
    ));
    let init = Frame::Init(fe2o3_amqp_types::sasl::SaslInit {
        mechanism: mechanism.into(),
        initial_response: Some(initial_response.to_vec().into()),
        hostname: None,
    });
    support::write_sasl(&mut stream, &init).await;
    match support::read_sasl(&mut stream).await {
        Frame::Outcome(outcome) => outcome.code,
        other => panic!("expected sasl-outcome, got {other:?}"),
    }
}

/// SASL TPM for a registration without a TPM enrollment is refused with `auth` at once
/// (tests/dps_tpm.rs runs the whole exchange). A DPS PLAIN login the core does not accept is a SASL failure too, and so is a
/// PLAIN identity that is neither the hub's nor DPS's.
#[tokio::test]
async fn amqp_sasl_refuses_tpm_and_unaccepted_dps_logins() {
    use fe2o3_amqp_types::sasl::SaslCode;
    let hub = emulator().await;
    let ep = endpoint(&hub);
    let scope = hub.dps_id_scope().to_owned();
    let scope = scope.as_str();
    let tpm = raw_sasl(&ep, "TPM", b"\0scope\0reg1\0ek").await;
    assert!(matches!(tpm, SaslCode::Auth), "{tpm:?}");

    let wrong = dps_token(
        scope,
        "reg1",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let plain = format!("\0{scope}/registrations/reg1\0{wrong}");
    let code = raw_sasl(&ep, "PLAIN", plain.as_bytes()).await;
    assert!(matches!(code, SaslCode::Auth), "{code:?}");
    let refused = Connection::builder()
        .container_id("dps-wrong-key")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Plain {
            username: format!("{scope}/registrations/reg1"),
            password: wrong,
        })
        .open_with_stream(tls(&ep, ep.tls_config()).await)
        .await;
    assert!(
        refused.is_err(),
        "a refused DPS login must fail the connection"
    );

    let code = raw_sasl(&ep, "PLAIN", b"\0nobody\0secret").await;
    assert!(matches!(code, SaslCode::Auth), "{code:?}");
    hub.shutdown().await;
}

// ------------------------------------------------------------------------------------------
// Registration flows. Enrollments are made through the DPS service API on the HTTPS port.

use azure_iot_protocol::mqtt::codec::{Publish, QoS, SubscribeReasonCode};
use serde_json::{Value, json};

/// The DPS service policy whose connection string the emulator hands out.
const DPS_POLICY: &str = "provisioningserviceowner";

/// The emulator's endpoint, with the DPS service connection string beside the hub's.
fn endpoint(hub: &azure_iot_emulator::EmulatorHandle) -> HubEndpoint {
    let mut ep = HubEndpoint::of(hub);
    ep.connection_strings
        .insert(DPS_POLICY.to_owned(), hub.dps_connection_string());
    ep
}

/// The DPS service API of the emulator behind `ep`.
fn dps_api(ep: &HubEndpoint) -> azure_iot_test::RestClient {
    azure_iot_test::RestClient::new(ep, DPS_POLICY)
}

/// An individual symmetric-key enrollment for `registration_id`; returns its primary key.
async fn enroll_key(ep: &HubEndpoint, registration_id: &str) -> String {
    let key = SharedAccessKey::generate().unwrap().to_base64();
    let reply = dps_api(ep)
        .put(
            &format!("/enrollments/{registration_id}"),
            json!({
                "registrationId": registration_id,
                "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": key, "secondaryKey": key}},
            }),
        )
        .await;
    assert!(reply.status.is_success(), "{reply:?}");
    key
}

/// A symmetric-key enrollment group; returns the key a device `registration_id` derives.
async fn enroll_group(ep: &HubEndpoint, group_id: &str, registration_id: &str) -> String {
    let group_key = SharedAccessKey::generate().unwrap();
    let encoded = group_key.to_base64();
    let reply = dps_api(ep)
        .put(
            &format!("/enrollmentGroups/{group_id}"),
            json!({
                "enrollmentGroupId": group_id,
                "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": encoded, "secondaryKey": encoded}},
            }),
        )
        .await;
    assert!(reply.status.is_success(), "{reply:?}");
    group_key
        .derive_for_registration(registration_id)
        .to_base64()
}

/// An individual X.509 enrollment for the self-signed certificate `der`.
async fn enroll_certificate(ep: &HubEndpoint, registration_id: &str, der: &[u8]) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
    let reply = dps_api(ep)
        .put(
            &format!("/enrollments/{registration_id}"),
            json!({
                "registrationId": registration_id,
                "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}},
            }),
        )
        .await;
    assert!(reply.status.is_success(), "{reply:?}");
}

/// A DPS device over MQTT (TLS or WebSockets), subscribed to its answers.
struct MqttDevice {
    client: MqttClient,
    registration_id: String,
    next_rid: u32,
}

impl MqttDevice {
    /// Connects `client` as `registration_id` with `password` (empty: X.509) and subscribes.
    async fn connect(
        mut client: MqttClient,
        scope: &str,
        registration_id: &str,
        password: &str,
    ) -> Self {
        let code = dps_connect(
            &mut client,
            registration_id,
            &dps_username(scope, registration_id),
            password,
        )
        .await;
        assert_eq!(code, ConnectReturnCode::Success);
        match client
            .subscribe("$dps/registrations/res/#", QoS::AtLeastOnce)
            .await
        {
            Packet::SubAck(ack) => assert_eq!(
                ack.return_codes,
                vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
            ),
            other => panic!("expected SUBACK, got {other:?}"),
        }
        Self {
            client,
            registration_id: registration_id.to_owned(),
            next_rid: 0,
        }
    }

    /// Publishes to `topic` (with `$rid` appended) at QoS 1; returns the status, whether a
    /// retry-after came, and the JSON body of the answer.
    async fn request(&mut self, topic: &str, body: &[u8]) -> (u16, Option<u32>, Value) {
        self.next_rid += 1;
        let rid = format!("r-{}", self.next_rid);
        let separator = if topic.contains('?') { '&' } else { '?' };
        let pkid = self
            .client
            .publish(
                &format!("{topic}{separator}$rid={rid}"),
                body.to_vec(),
                QoS::AtLeastOnce,
            )
            .await;
        match self.client.recv().await {
            Some(Packet::PubAck(ack)) => assert_eq!(ack.pkid, pkid),
            other => panic!("expected PUBACK first, got {other:?}"),
        }
        let answer: Publish = self.client.next_publish().await;
        assert_eq!(answer.qos, QoS::AtLeastOnce);
        let (status, retry_after) = parse_answer_topic(&answer.topic, &rid);
        let body = serde_json::from_slice(&answer.payload).expect("every answer is JSON");
        (status, retry_after, body)
    }

    async fn register(&mut self, body: &[u8]) -> (u16, Option<u32>, Value) {
        self.request("$dps/registrations/PUT/iotdps-register/", body)
            .await
    }

    async fn poll(&mut self, operation_id: &str) -> (u16, Option<u32>, Value) {
        let topic = format!(
            "$dps/registrations/GET/iotdps-get-operationstatus/?operationId={operation_id}"
        );
        // `$rid` goes after the operation id here; answers must put it first regardless.
        self.request(&topic, b" ").await
    }

    /// Registers and polls until assigned (no sleeping: the poll is repeated at once, within
    /// a bound); returns the final operation status.
    async fn register_until_assigned(&mut self, body: &[u8]) -> Value {
        let (status, retry_after, answer) = self.register(body).await;
        assert!(status == 200 || status == 202, "{status} {answer}");
        assert_eq!(
            retry_after.is_some(),
            status == 202,
            "retry-after only with 202"
        );
        let mut answer = answer;
        for _ in 0..1000 {
            if answer["status"] != "assigning" {
                break;
            }
            let operation_id = answer["operationId"].as_str().unwrap().to_owned();
            let (status, _, next) = self.poll(&operation_id).await;
            assert!(status == 200 || status == 202, "{status} {next}");
            answer = next;
        }
        assert_eq!(answer["status"], "assigned", "{answer}");
        assert_eq!(
            answer["registrationState"]["registrationId"],
            self.registration_id.as_str()
        );
        answer
    }
}

/// The status and retry-after of `$dps/registrations/res/{status}/?$rid={rid}[&retry-after=s]`,
/// checking that `$rid` comes first and is echoed unchanged.
fn parse_answer_topic(topic: &str, rid: &str) -> (u16, Option<u32>) {
    let rest = topic
        .strip_prefix("$dps/registrations/res/")
        .unwrap_or_else(|| panic!("answer topic {topic}"));
    let (status, query) = rest.split_once("/?").unwrap();
    let mut pairs = query.split('&');
    assert_eq!(
        pairs.next(),
        Some(format!("$rid={rid}").as_str()),
        "{topic}"
    );
    let retry_after = pairs
        .find_map(|p| p.strip_prefix("retry-after="))
        .map(|s| s.parse().expect("whole seconds"));
    (status.parse().unwrap(), retry_after)
}

use fe2o3_amqp_types::messaging::{
    ApplicationProperties, Body, Data, Message, MessageId, Outcome, Properties,
};
use fe2o3_amqp_types::primitives::{SimpleValue, Value as AmqpValue};

/// A DPS device over AMQP: a connection, one session, the link pair at its address.
struct AmqpDevice {
    connection: fe2o3_amqp::connection::ConnectionHandle<()>,
    _session: fe2o3_amqp::session::SessionHandle<()>,
    sender: Sender,
    receiver: Receiver,
    next: u32,
}

/// What DPS made of a request over AMQP: the answer's retry hint and body, or the rejection.
type AmqpAnswer = Result<(Option<i64>, Value), fe2o3_amqp_types::definitions::Error>;

impl AmqpDevice {
    /// Opens the connection over `stream` (`sasl`: PLAIN for a SAS token; none for X.509, as
    /// Node's rhea) and attaches the receiver, then the sender, at `address` (as Node and C#).
    async fn open<S>(stream: S, sasl: Option<SaslProfile>, address: &str) -> Self
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
    {
        let builder = Connection::builder()
            .container_id("dps-device")
            .hostname("localhost");
        let mut connection = match sasl {
            Some(profile) => builder.sasl_profile(profile).open_with_stream(stream).await,
            None => builder.open_with_stream(stream).await,
        }
        .expect("the connection opens");
        let mut session = Session::begin(&mut connection).await.unwrap();
        let receiver = Receiver::attach(&mut session, "dps-answers", address)
            .await
            .unwrap();
        let sender = Sender::attach(&mut session, "dps-requests", address)
            .await
            .unwrap();
        Self {
            connection,
            _session: session,
            sender,
            receiver,
            next: 0,
        }
    }

    /// Sends one request (operation type, operation id for a poll, body as one data
    /// section) and takes its answer.
    async fn request(
        &mut self,
        operation: &str,
        operation_id: Option<&str>,
        body: &[u8],
    ) -> AmqpAnswer {
        self.next += 1;
        let correlation = format!("corr-{}", self.next);
        let mut properties = ApplicationProperties::builder()
            .insert("iotdps-operation-type", operation)
            .insert("iotdps-forceRegistration", false);
        if let Some(id) = operation_id {
            properties = properties.insert("iotdps-operation-id", id);
        }
        let message = Message::builder()
            .properties(Properties {
                correlation_id: Some(MessageId::String(correlation.clone())),
                ..Default::default()
            })
            .application_properties(properties.build())
            .body(Body::<AmqpValue>::Data(
                vec![Data(body.to_vec().into())].into(),
            ))
            .build();
        match self.sender.send(message).await.unwrap() {
            Outcome::Accepted(_) => {}
            Outcome::Rejected(rejected) => return Err(rejected.error.expect("an error")),
            other => panic!("unexpected outcome {other:?}"),
        }
        let delivery = tokio::time::timeout(
            Duration::from_secs(10),
            self.receiver.recv::<Body<AmqpValue>>(),
        )
        .await
        .expect("an answer within 10 s")
        .unwrap();
        self.receiver.accept(&delivery).await.unwrap();
        let message = delivery.message();
        assert_eq!(
            message
                .properties
                .as_ref()
                .and_then(|p| p.correlation_id.clone()),
            Some(MessageId::String(correlation))
        );
        let app = message.application_properties.as_ref();
        let hint = |name: &str| {
            app.and_then(|a| a.0.get(name)).map(|v| match v {
                SimpleValue::Int(i) => i64::from(*i),
                other => panic!("retry hint {other:?}"),
            })
        };
        let retry_after = hint("retry-after");
        assert_eq!(retry_after, hint("Retry-After"), "both spellings");
        let Body::Data(sections) = &message.body else {
            panic!("the answer must be data sections (Node parses their bytes)");
        };
        let bytes: Vec<u8> = sections.iter().flat_map(|d| d.0.to_vec()).collect();
        Ok((retry_after, serde_json::from_slice(&bytes).expect("JSON")))
    }

    async fn register_until_assigned(&mut self, body: &[u8], registration_id: &str) -> Value {
        let (_, mut answer) = self.request("iotdps-register", None, body).await.unwrap();
        for _ in 0..1000 {
            if answer["status"] != "assigning" {
                break;
            }
            let operation_id = answer["operationId"].as_str().unwrap().to_owned();
            answer = self
                .request("iotdps-get-operationstatus", Some(&operation_id), b"")
                .await
                .unwrap()
                .1;
        }
        assert_eq!(answer["status"], "assigned", "{answer}");
        assert_eq!(
            answer["registrationState"]["registrationId"],
            registration_id
        );
        answer
    }

    async fn close(self) {
        let mut connection = self.connection;
        let _ = connection.close().await;
    }
}

/// The error body a rejection carries in its description.
fn rejection_body(error: &fe2o3_amqp_types::definitions::Error) -> Value {
    serde_json::from_str(error.description.as_deref().unwrap_or_default())
        .expect("the description is DPS's JSON error body")
}

/// The assigned device connects to the hub over MQTT with the key it registered with.
async fn connects_to_the_hub(ep: &HubEndpoint, answer: &Value, key: &str) {
    let state = &answer["registrationState"];
    assert_eq!(state["assignedHub"], ep.hostname.as_str());
    let device_id = state["deviceId"].as_str().unwrap();
    let token = azure_iot_test::device_token(ep, device_id, None, key, Duration::from_secs(600));
    let (_client, ack) = MqttClient::connect(ep, device_id, &token, true, 60).await;
    assert_eq!(
        ack.code,
        ConnectReturnCode::Success,
        "{device_id} at the hub"
    );
}

/// MQTT over TLS with symmetric keys: an individual enrollment (Node/Python body), then a
/// group's derived key with C#'s empty body; each device then connects to the hub.
#[tokio::test]
async fn mqtt_registers_with_individual_and_group_keys() {
    let hub = emulator().await;
    let ep = endpoint(&hub);
    let scope = hub.dps_id_scope().to_owned();
    let scope = scope.as_str();

    let key = enroll_key(&ep, "mqtt-key-1").await;
    let token = dps_token(scope, "mqtt-key-1", &key);
    let mut device =
        MqttDevice::connect(MqttClient::open(&ep).await, scope, "mqtt-key-1", &token).await;
    let answer = device
        .register_until_assigned(br#"{"registrationId":"mqtt-key-1","payload":null}"#)
        .await;
    connects_to_the_hub(&ep, &answer, &key).await;

    let derived = enroll_group(&ep, "mqtt-group", "mqtt-member-1").await;
    let token = dps_token(scope, "mqtt-member-1", &derived);
    let mut device =
        MqttDevice::connect(MqttClient::open(&ep).await, scope, "mqtt-member-1", &token).await;
    let answer = device.register_until_assigned(b"").await;
    connects_to_the_hub(&ep, &answer, &derived).await;
    hub.shutdown().await;
}

/// MQTT over WebSockets at C#'s path `/` with an X.509 certificate (rcgen) and no password.
#[tokio::test]
async fn mqtt_over_websockets_registers_with_an_x509_certificate() {
    let hub = emulator().await;
    let ep = endpoint(&hub);
    let scope = hub.dps_id_scope().to_owned();
    let scope = scope.as_str();
    let (cert, key, _) = azure_iot_test::self_signed_device_certificate("mqtt-x509-1");
    enroll_certificate(&ep, "mqtt-x509-1", &cert).await;
    let tls = ep.tls_config_with_certificate(vec![cert], key);
    let stream = websocket_stream(&ep, "/", "mqtt", tls).await;
    let mut device = MqttDevice::connect(MqttClient::over(stream), scope, "mqtt-x509-1", "").await;
    device
        .register_until_assigned(br#"{"registrationId":"mqtt-x509-1"}"#)
        .await;
    hub.shutdown().await;
}

/// A device whose leaf is signed by an intermediate signed by a root registered with the DPS
/// registers over MQTT through a group that names the root in `caReferences`, presenting leaf
/// and intermediate in the TLS handshake.
#[tokio::test]
async fn mqtt_registers_through_a_group_referencing_a_registered_ca() {
    let hub = emulator().await;
    let ep = endpoint(&hub);
    let scope = hub.dps_id_scope().to_owned();
    let root = azure_iot_test::TestCa::new("Wire Root");
    let intermediate = root.intermediate("Wire Intermediate");
    let api = dps_api(&ep);
    let registered = api
        .put(
            "/$emulator/dps/certificates/wire-root",
            json!({"properties": {"certificate": root.cert.pem()}}),
        )
        .await;
    assert!(registered.status.is_success(), "{registered:?}");
    let group = api
        .put(
            "/enrollmentGroups/wire-fleet",
            json!({"enrollmentGroupId": "wire-fleet", "attestation": {"type": "x509", "x509": {"caReferences": {"primary": "wire-root", "secondary": null}}}}),
        )
        .await;
    assert!(group.status.is_success(), "{group:?}");
    let valid_until = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let (leaf, key) = intermediate.issue("wire-dev-1", valid_until);
    let client =
        MqttClient::open_with_certificate(&ep, vec![leaf, intermediate.cert.der().clone()], key)
            .await;
    let mut device = MqttDevice::connect(client, &scope, "wire-dev-1", "").await;
    let answer = device
        .register_until_assigned(br#"{"registrationId":"wire-dev-1"}"#)
        .await;
    assert_eq!(
        answer["registrationState"]["x509"]["enrollmentGroupId"],
        "wire-fleet"
    );
    hub.shutdown().await;
}

/// Bad input over MQTT: a wrong key and an unknown scope are not authorized; garbage
/// register JSON is a 400 with DPS's error body and a poll of an unknown operation a 404,
/// the connection staying usable; a filter other than DPS's is refused with 0x80; a topic
/// that is not a DPS request ends the connection.
#[tokio::test]
async fn mqtt_bad_input() {
    let hub = emulator().await;
    let ep = endpoint(&hub);
    let scope = hub.dps_id_scope().to_owned();
    let scope = scope.as_str();
    let key = enroll_key(&ep, "mqtt-bad-1").await;

    let wrong = dps_token(
        scope,
        "mqtt-bad-1",
        &SharedAccessKey::generate().unwrap().to_base64(),
    );
    let mut client = MqttClient::open(&ep).await;
    let code = dps_connect(
        &mut client,
        "mqtt-bad-1",
        &dps_username(scope, "mqtt-bad-1"),
        &wrong,
    )
    .await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    client.expect_closed().await;

    let elsewhere = dps_token(FOREIGN_SCOPE, "mqtt-bad-1", &key);
    let mut client = MqttClient::open(&ep).await;
    let code = dps_connect(
        &mut client,
        "mqtt-bad-1",
        &dps_username(FOREIGN_SCOPE, "mqtt-bad-1"),
        &elsewhere,
    )
    .await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    client.expect_closed().await;

    let token = dps_token(scope, "mqtt-bad-1", &key);
    let mut device =
        MqttDevice::connect(MqttClient::open(&ep).await, scope, "mqtt-bad-1", &token).await;
    let (status, _, body) = device.register(b"{not json").await;
    assert_eq!(status, 400);
    assert_eq!(body["errorCode"].as_i64().unwrap() / 1000, 400, "{body}");
    let (status, _, body) = device.poll("no-such-operation").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["errorCode"].is_i64(), "{body}");
    match device
        .client
        .subscribe(
            "devices/mqtt-bad-1/messages/devicebound/#",
            QoS::AtLeastOnce,
        )
        .await
    {
        Packet::SubAck(ack) => assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Failure]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    device
        .register_until_assigned(br#"{"registrationId":"mqtt-bad-1"}"#)
        .await;
    device
        .client
        .publish(
            "devices/mqtt-bad-1/messages/events/",
            b"x".to_vec(),
            QoS::AtLeastOnce,
        )
        .await;
    device.client.expect_closed().await;
    hub.shutdown().await;
}

/// AMQP over TLS with SASL PLAIN: an individual key (Node's body) and a group's derived key
/// (C#'s empty body); each device then connects to the hub.
#[tokio::test]
async fn amqp_registers_with_individual_and_group_keys() {
    let hub = emulator().await;
    let ep = endpoint(&hub);
    let scope = hub.dps_id_scope().to_owned();
    let scope = scope.as_str();
    for (registration_id, group) in [("amqp-key-1", None), ("amqp-member-1", Some("amqp-group"))] {
        let key = match group {
            None => enroll_key(&ep, registration_id).await,
            Some(group) => enroll_group(&ep, group, registration_id).await,
        };
        let address = format!("{scope}/registrations/{registration_id}");
        let sasl = SaslProfile::Plain {
            username: address.clone(),
            password: dps_token(scope, registration_id, &key),
        };
        let mut device =
            AmqpDevice::open(tls(&ep, ep.tls_config()).await, Some(sasl), &address).await;
        let body = match group {
            None => format!(r#"{{"registrationId":"{registration_id}"}}"#).into_bytes(),
            Some(_) => Vec::new(),
        };
        let answer = device.register_until_assigned(&body, registration_id).await;
        connects_to_the_hub(&ep, &answer, &key).await;
        device.close().await;
    }
    hub.shutdown().await;
}

/// AMQP with an X.509 certificate: over WebSockets at `/` with no SASL layer (Node's rhea) and
/// the links addressed as C does (`amqps://{host}/…`), then over TLS with SASL ANONYMOUS.
#[tokio::test]
async fn amqp_registers_with_an_x509_certificate() {
    let hub = emulator().await;
    let ep = endpoint(&hub);
    let scope = hub.dps_id_scope().to_owned();
    let scope = scope.as_str();
    let (cert, key, _) = azure_iot_test::self_signed_device_certificate("amqp-x509-1");
    enroll_certificate(&ep, "amqp-x509-1", &cert).await;
    let tls_config = ep.tls_config_with_certificate(vec![cert], key.clone_key());
    let stream = websocket_stream(&ep, "/", "AMQPWSB10", tls_config.clone()).await;
    let address = format!("amqps://localhost/{scope}/registrations/amqp-x509-1");
    let mut device = AmqpDevice::open(stream, None, &address).await;
    device
        .register_until_assigned(br#"{"registrationId":"amqp-x509-1"}"#, "amqp-x509-1")
        .await;
    device.close().await;

    // Over TLS with SASL ANONYMOUS, the links addressed as Node does.
    let address = format!("{scope}/registrations/amqp-x509-1");
    let stream = tls(&ep, tls_config).await;
    let mut device = AmqpDevice::open(stream, Some(SaslProfile::Anonymous), &address).await;
    device.register_until_assigned(b"", "amqp-x509-1").await;
    device.close().await;
    hub.shutdown().await;
}

/// Bad input over AMQP: garbage register JSON and an unknown operation id are rejected with
/// DPS's JSON error body (400, 404) and the link stays usable.
#[tokio::test]
async fn amqp_bad_input() {
    let hub = emulator().await;
    let ep = endpoint(&hub);
    let scope = hub.dps_id_scope().to_owned();
    let scope = scope.as_str();
    let key = enroll_key(&ep, "amqp-bad-1").await;
    let address = format!("{scope}/registrations/amqp-bad-1");
    let sasl = SaslProfile::Plain {
        username: address.clone(),
        password: dps_token(scope, "amqp-bad-1", &key),
    };
    let mut device = AmqpDevice::open(tls(&ep, ep.tls_config()).await, Some(sasl), &address).await;
    let refused = device
        .request("iotdps-register", None, b"{not json")
        .await
        .expect_err("rejected");
    assert_eq!(
        rejection_body(&refused)["errorCode"].as_i64().unwrap() / 1000,
        400
    );
    let refused = device
        .request("iotdps-get-operationstatus", Some("no-such-operation"), b"")
        .await
        .expect_err("rejected");
    assert_eq!(
        rejection_body(&refused)["errorCode"].as_i64().unwrap() / 1000,
        404
    );
    let refused = device
        .request("iotdps-something-else", None, b"")
        .await
        .expect_err("rejected");
    assert_eq!(
        rejection_body(&refused)["errorCode"].as_i64().unwrap() / 1000,
        400
    );
    device.register_until_assigned(b"", "amqp-bad-1").await;
    device.close().await;
    hub.shutdown().await;
}
