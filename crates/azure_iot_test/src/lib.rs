//! Test support shared by the workspace's tests (`publish = false`).
//!
//! * [`HubEndpoint`]: where an emulator listens, the CA to trust and its policies' connection
//!   strings — from an in-process [`EmulatorHandle`] or from the `hub.json` and `ca.pem` that
//!   `azure-iot hub start` writes.
//! * [`RestClient`]: a raw service REST client (SAS `Authorization`, JSON, `If-Match`) that
//!   reports status, headers and body exactly, and checks the JSON content type on every body.
//! * [`dps_emulator`], [`dps_put`], [`key_enrollment`]: an emulator whose DPS answers at once;
//!   enrollments on the emulator's DPS service API.
//! * [`DeviceHttp`]: a device on the device HTTPS API (telemetry, C2D polling, file upload).
//! * [`register_over_https`]: a device registering with the emulator's DPS by hand.
//! * [`TestCa`]: root and intermediate CAs that issue client certificates (CA-signed X.509).
//! * [`MqttClient`]: a raw MQTT 3.1.1 client over TLS that sends exactly the packets a test
//!   writes, so tests can check the wire and misbehave on purpose.
//! * [`tls_connect`], [`websocket_upgrade`], [`websocket_frame`]: raw TLS connections to any
//!   port and hand-made WebSocket frames, for abuse tests that send what no client would.
//!
//! * [`SoftwareTpm`]: a software TPM (swtpm) on free ports, driven with tpm2-tools, that
//!   opens DPS activation blobs the way the DPS TPM clients do.
//!
//! Helpers panic with a message on failure: they are for tests only.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod ca;
mod device_http;
mod dps;
mod dps_register;
mod endpoint;
mod mqtt;
mod proxy;
mod raw;
mod rest;
mod swtpm;

pub use ca::TestCa;
pub use device_http::DeviceHttp;
pub use dps::{dps_emulator, dps_put, key_enrollment};
pub use dps_register::register_over_https;
pub use endpoint::HubEndpoint;
pub use mqtt::{MqttClient, MqttIo, device_token};
pub use proxy::connect_proxy;
pub use raw::{
    TlsClientStream, opcode, tls_connect, websocket_frame, websocket_frame_header,
    websocket_stream, websocket_upgrade,
};
pub use rest::{Reply, RestClient, http_client};
pub use swtpm::SoftwareTpm;

use azure_iot_emulator::{Emulator, EmulatorHandle};

/// A self-signed device certificate (rcgen) with common name `cn`, its private key, and its
/// SHA-1 thumbprint as the registry stores it (upper-case hex).
pub fn self_signed_device_certificate(
    cn: &str,
) -> (
    rustls_pki_types::CertificateDer<'static>,
    rustls_pki_types::PrivateKeyDer<'static>,
    String,
) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let der = cert.der().clone();
    let sha1: String = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    (
        der,
        rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        sha1,
    )
}

/// An emulator on ephemeral ports with its state in memory.
pub async fn emulator() -> EmulatorHandle {
    Emulator::builder()
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .start()
        .await
        .expect("emulator starts")
}
