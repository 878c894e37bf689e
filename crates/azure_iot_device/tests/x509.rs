//! X.509 device authentication against the in-process emulator over TLS: a self-signed
//! certificate registered by thumbprint is accepted; an unregistered one and unusable PEM
//! are refused with typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_device::{ClientOptions, DeviceClient, ErrorKind, Message, X509Certificate};
use azure_iot_emulator::EmulatorHandle;
use azure_iot_test::{HubEndpoint, RestClient, emulator};
use reqwest::StatusCode;
use serde_json::json;

/// A self-signed certificate for `cn` as PEM (certificate, key) and its SHA-1 thumbprint.
fn self_signed(cn: &str) -> (String, String, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let thumbprint = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.der())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    (cert.pem(), key.serialize_pem(), thumbprint)
}

fn options(hub: &EmulatorHandle) -> ClientOptions {
    ClientOptions::default()
        .trusted_ca_pem(hub.ca_pem())
        .port(hub.mqtt_addr().port())
        .operation_timeout(Duration::from_secs(10))
}

async fn register(hub: &EmulatorHandle, device_id: &str, thumbprint: &str) {
    let r = RestClient::new(&HubEndpoint::of(hub), "iothubowner")
        .put(
            &format!("/devices/{device_id}"),
            json!({"authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": thumbprint, "secondaryThumbprint": null}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn a_registered_self_signed_certificate_connects_and_sends() {
    let hub = emulator().await;
    let (cert_pem, key_pem, thumbprint) = self_signed("x509-dev");
    register(&hub, "x509-dev", &thumbprint).await;
    let certificate = X509Certificate::from_pem(&cert_pem, &key_pem).unwrap();
    assert!(
        !format!("{certificate:?}").contains("PRIVATE"),
        "Debug hides the key"
    );
    let client = DeviceClient::from_x509(
        hub.hostname(),
        "x509-dev",
        None,
        &certificate,
        options(&hub),
    )
    .await
    .unwrap();
    client
        .send_event(Message::new("signed").unwrap())
        .await
        .unwrap();
    let logged = hub.telemetry(0, 10).await.unwrap();
    assert_eq!(
        logged[0]
            .message
            .system_properties()
            .connection_auth_method
            .as_deref(),
        Some("x509")
    );
    assert_eq!(client.get_twin().await.unwrap().desired["$version"], 1);
    client.close().await;
}

#[tokio::test]
async fn an_unregistered_certificate_is_unauthorized_and_bad_pem_is_invalid() {
    let hub = emulator().await;
    let (_, _, thumbprint) = self_signed("x509-dev");
    register(&hub, "x509-dev", &thumbprint).await;
    let (other_cert, other_key, _) = self_signed("x509-dev");
    let other = X509Certificate::from_pem(&other_cert, &other_key).unwrap();
    let e = DeviceClient::from_x509(hub.hostname(), "x509-dev", None, &other, options(&hub))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");

    let e = X509Certificate::from_pem("not pem", &other_key).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let e = X509Certificate::from_pem(&other_cert, "not a key").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // A connection string that says x509=true points at from_x509.
    let e = DeviceClient::from_connection_string(
        &format!("HostName={};DeviceId=x509-dev;x509=true", hub.hostname()),
        options(&hub),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("from_x509"), "{e}");
}

/// Over AMQP the certificate authenticates the TLS connection (no SASL, no CBS token), and
/// an unregistered certificate is refused as over MQTT.
#[cfg(feature = "amqp")]
#[tokio::test]
async fn x509_over_amqp() {
    let hub = emulator().await;
    let (cert_pem, key_pem, thumbprint) = self_signed("x509-amqp");
    register(&hub, "x509-amqp", &thumbprint).await;
    let certificate = X509Certificate::from_pem(&cert_pem, &key_pem).unwrap();
    let amqp = || {
        options(&hub)
            .transport(azure_iot_device::Transport::Amqp)
            .port(hub.amqp_addr().port())
    };
    let client = DeviceClient::from_x509(hub.hostname(), "x509-amqp", None, &certificate, amqp())
        .await
        .unwrap();
    client
        .send_event(Message::new("signed over amqp").unwrap())
        .await
        .unwrap();
    let twin = client.get_twin().await.unwrap();
    assert!(twin.reported.is_object());
    assert_eq!(
        hub.telemetry(0, 10).await.unwrap()[0]
            .message
            .body()
            .as_ref(),
        b"signed over amqp"
    );
    client.close().await;

    let (other_pem, other_key, _) = self_signed("x509-amqp");
    let stranger = X509Certificate::from_pem(&other_pem, &other_key).unwrap();
    let refused = DeviceClient::from_x509(hub.hostname(), "x509-amqp", None, &stranger, amqp())
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unauthorized, "{refused}");
}
