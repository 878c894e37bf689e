//! The Device Provisioning Service's device front-ends over MQTT, MQTT over WebSockets, AMQP
//! and AMQP over WebSockets, at wire level, against the in-process emulator with real TLS.

use std::sync::Arc;
use std::time::Duration;

use azure_iot_core::sas::{ResourceUri, SasToken, SharedAccessKey};
use azure_iot_protocol::mqtt::codec::{Connect, ConnectReturnCode, Packet};
use azure_iot_test::{HubEndpoint, MqttClient, emulator, websocket_stream};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::{Connection, Receiver, Sender, Session};

/// The id scope the in-process emulator's DPS answers to.
const SCOPE: &str = "0ne00000000";

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
    let ep = HubEndpoint::of(&hub);

    let mut client = MqttClient::open(&ep).await;
    let code = dps_connect(&mut client, "reg1", &dps_username(SCOPE, "reg1"), "").await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    client.expect_closed().await;

    let mut client = MqttClient::open(&ep).await;
    let token = dps_token(
        SCOPE,
        "reg1",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let code = dps_connect(&mut client, "other", &dps_username(SCOPE, "reg1"), &token).await;
    assert_eq!(code, ConnectReturnCode::BadClientId);
    client.expect_closed().await;
    hub.shutdown().await;
}

/// C#'s DPS clients open their WebSocket at `/`: the upgrade there reaches the same MQTT code
/// (a DPS CONNECT gets its DPS answer), while a plain `GET /` is still an unknown path.
#[tokio::test]
async fn websocket_upgrades_at_the_root_path_reach_dps() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    for path in ["/", "/$iothub/websocket"] {
        let stream = websocket_stream(&ep, path, "mqtt", ep.tls_config()).await;
        let mut client = MqttClient::over(stream);
        let code = dps_connect(&mut client, "reg1", &dps_username(SCOPE, "reg1"), "").await;
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
    let ep = HubEndpoint::of(&hub);
    let mut connection = Connection::builder()
        .container_id("dps-anonymous")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Anonymous)
        .open_with_stream(tls(&ep, ep.tls_config()).await)
        .await
        .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let address = format!("{SCOPE}/registrations/reg1");
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

    async fn read_frame(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Frame {
        let mut header = [0u8; 8];
        stream.read_exact(&mut header).await.unwrap();
        let size = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
        let mut body = vec![0u8; size - 8];
        stream.read_exact(&mut body).await.unwrap();
        serde_amqp::from_slice(&body).unwrap()
    }

    let mut stream = tls(ep, ep.tls_config()).await;
    stream.write_all(b"AMQP\x03\x01\x00\x00").await.unwrap();
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await.unwrap();
    assert_eq!(&header, b"AMQP\x03\x01\x00\x00");
    assert!(matches!(
        read_frame(&mut stream).await,
        Frame::Mechanisms(_)
    ));
    let init = Frame::Init(fe2o3_amqp_types::sasl::SaslInit {
        mechanism: mechanism.into(),
        initial_response: Some(initial_response.to_vec().into()),
        hostname: None,
    });
    let body = serde_amqp::to_vec(&init).unwrap();
    let mut frame = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&[2, 1, 0, 0]);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await.unwrap();
    match read_frame(&mut stream).await {
        Frame::Outcome(outcome) => outcome.code,
        other => panic!("expected sasl-outcome, got {other:?}"),
    }
}

/// TPM attestation over AMQP is another issue's: SASL mechanism TPM is refused with `auth`
/// at once. A DPS PLAIN login the core does not accept is a SASL failure too, and so is a
/// PLAIN identity that is neither the hub's nor DPS's.
#[tokio::test]
async fn amqp_sasl_refuses_tpm_and_unaccepted_dps_logins() {
    use fe2o3_amqp_types::sasl::SaslCode;
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let tpm = raw_sasl(&ep, "TPM", b"\0scope\0reg1\0ek").await;
    assert!(matches!(tpm, SaslCode::Auth), "{tpm:?}");

    let wrong = dps_token(
        SCOPE,
        "reg1",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let plain = format!("\0{SCOPE}/registrations/reg1\0{wrong}");
    let code = raw_sasl(&ep, "PLAIN", plain.as_bytes()).await;
    assert!(matches!(code, SaslCode::Auth), "{code:?}");
    let refused = Connection::builder()
        .container_id("dps-wrong-key")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Plain {
            username: format!("{SCOPE}/registrations/reg1"),
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
