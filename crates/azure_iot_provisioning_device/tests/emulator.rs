//! The provisioning client against the in-process emulator's DPS: every transport with an
//! individual key, a group key and an individual X.509 certificate, each provisioned device
//! then connecting to its hub and sending telemetry; and the refusals (wrong key, unknown
//! scope, disabled enrollment, a silent endpoint hitting the overall timeout).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_core::sas::SharedAccessKey;
use azure_iot_device::{ClientOptions, Message};
use azure_iot_emulator::EmulatorHandle;
use azure_iot_provisioning_device::{
    Attestation, Error, ProvisioningDeviceClient, RegistrationStatus, RegistrationSubstatus,
    Transport,
};
use azure_iot_test::dps_put as put;
use serde_json::{Value, json};

async fn start() -> EmulatorHandle {
    azure_iot_test::dps_emulator().await
}

fn key_enrollment(id: &str, key: &str) -> Value {
    azure_iot_test::key_enrollment("registrationId", id, key)
}

/// A device certificate with common name `cn`, self-signed or issued by `ca`:
/// (certificate PEM, key PEM).
fn certificate_by(
    cn: &str,
    ca: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = match ca {
        Some((ca_cert, ca_key)) => {
            let issuer = rcgen::Issuer::from_ca_cert_der(ca_cert.der(), ca_key).unwrap();
            params.signed_by(&key, &issuer).unwrap()
        }
        None => params.self_signed(&key).unwrap(),
    };
    (cert.pem(), key.serialize_pem())
}

/// A self-signed device certificate with common name `cn`: (certificate PEM, key PEM).
fn certificate(cn: &str) -> (String, String) {
    certificate_by(cn, None)
}

/// The emulator's port for `transport` (DPS and the hub share them).
fn port(hub: &EmulatorHandle, transport: Transport) -> u16 {
    match transport {
        Transport::Mqtt => hub.mqtt_addr().port(),
        Transport::Amqp => hub.amqp_addr().port(),
        _ => hub.https_addr().port(),
    }
}

fn client(
    hub: &EmulatorHandle,
    transport: Transport,
    attestation: Attestation,
) -> azure_iot_provisioning_device::ProvisioningDeviceClientBuilder {
    client_in(hub, hub.dps_id_scope(), transport, attestation)
}

/// [`client`] for the id scope `scope` (ours or another).
fn client_in(
    hub: &EmulatorHandle,
    scope: &str,
    transport: Transport,
    attestation: Attestation,
) -> azure_iot_provisioning_device::ProvisioningDeviceClientBuilder {
    ProvisioningDeviceClient::builder(scope, attestation)
        .global_endpoint("localhost")
        .port(port(hub, transport))
        .transport(transport)
        .trusted_ca_pem(hub.ca_pem())
}

/// Registers with `attestation`, checks the assignment, connects to the hub as the device and
/// sends telemetry.
async fn provision_and_send(
    hub: &EmulatorHandle,
    transport: Transport,
    attestation: Attestation,
    registration_id: Option<&str>,
    expected_id: &str,
) {
    let mut builder = client(hub, transport, attestation);
    if let Some(id) = registration_id {
        builder = builder.registration_id(id);
    }
    let result = builder
        .build()
        .unwrap()
        .register()
        .await
        .unwrap_or_else(|e| panic!("{transport:?} {expected_id}: {e}"));
    assert_eq!(result.assigned_hub(), hub.hostname());
    assert_eq!(result.device_id(), expected_id);
    assert_eq!(result.registration_id(), expected_id);
    assert_eq!(result.status(), RegistrationStatus::Assigned);
    assert_eq!(
        result.substatus(),
        Some(RegistrationSubstatus::InitialAssignment)
    );
    assert!(result.etag().is_some() && result.created_date_time_utc().is_some());
    let options = ClientOptions::default()
        .transport(transport)
        .port(port(hub, transport))
        .trusted_ca_pem(hub.ca_pem());
    let device = result
        .device_client(options)
        .await
        .unwrap_or_else(|e| panic!("{transport:?} {expected_id} at the hub: {e}"));
    device
        .send_event(Message::new(format!("{{\"from\":\"{expected_id}\"}}")).unwrap())
        .await
        .unwrap();
    device.close().await;
}

/// Every attestation over `transport`: an individual key, a key derived from a group's, and
/// an individual X.509 certificate (registration id taken from its common name).
async fn every_attestation(transport: Transport) {
    let hub = start().await;
    let tag = format!("{transport:?}").to_lowercase();
    let individual_key = SharedAccessKey::generate().unwrap().to_base64();
    let individual = format!("{tag}-key");
    put(
        &hub,
        &format!("/enrollments/{individual}"),
        key_enrollment(&individual, &individual_key),
    )
    .await;
    let group_key = SharedAccessKey::generate().unwrap().to_base64();
    put(
        &hub,
        "/enrollmentGroups/fleet",
        azure_iot_test::key_enrollment("enrollmentGroupId", "fleet", &group_key),
    )
    .await;
    let cert_id = format!("{tag}-cert");
    let (cert_pem, key_pem) = certificate(&cert_id);
    put(
        &hub,
        &format!("/enrollments/{cert_id}"),
        json!({"registrationId": cert_id,
               "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": cert_pem}}}}}),
    )
    .await;

    provision_and_send(
        &hub,
        transport,
        Attestation::symmetric_key(&individual_key).unwrap(),
        Some(&individual),
        &individual,
    )
    .await;
    let member = format!("{tag}-member");
    provision_and_send(
        &hub,
        transport,
        Attestation::group_key(&group_key).unwrap(),
        Some(&member),
        &member,
    )
    .await;
    provision_and_send(
        &hub,
        transport,
        Attestation::x509_pem(&cert_pem, &key_pem).unwrap(),
        None,
        &cert_id,
    )
    .await;
    hub.shutdown().await;
}

/// One test per transport, so each has its own name and runs beside the others.
macro_rules! every_attestation_over {
    ($($name:ident: $transport:expr),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            every_attestation($transport).await;
        }
    )*};
}

every_attestation_over! {
    mqtt_every_attestation: Transport::Mqtt,
    mqtt_ws_every_attestation: Transport::MqttWebSockets,
    amqp_every_attestation: Transport::Amqp,
    amqp_ws_every_attestation: Transport::AmqpWebSockets,
    https_every_attestation: Transport::Https,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_group_members_present_their_chain_on_every_transport() {
    let hub = start().await;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Fleet CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    put(
        &hub,
        "/enrollmentGroups/cams",
        json!({"enrollmentGroupId": "cams",
               "attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": ca.pem()}}}}}),
    )
    .await;
    for transport in TRANSPORTS {
        let id = format!("cam-{}", format!("{transport:?}").to_lowercase());
        let (leaf, key) = certificate_by(&id, Some((&ca, &ca_key)));
        // The device certificate first, then its issuer: the chain DPS checks against the group.
        let chain = format!("{leaf}{}", ca.pem());
        provision_and_send(
            &hub,
            transport,
            Attestation::x509_pem(&chain, &key).unwrap(),
            None,
            &id,
        )
        .await;
    }
    hub.shutdown().await;
}

const TRANSPORTS: [Transport; 5] = [
    Transport::Mqtt,
    Transport::MqttWebSockets,
    Transport::Amqp,
    Transport::AmqpWebSockets,
    Transport::Https,
];

/// A registration DPS refuses, and what the client must say.
struct Refusal {
    what: &'static str,
    /// `None`: the emulator's id scope.
    scope: Option<&'static str>,
    registration_id: &'static str,
    key: String,
    expected: fn(&Error) -> bool,
    /// DPS's error code, where the transport carries it (HTTPS).
    https_code: Option<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_errors_on_every_transport() {
    let hub = start().await;
    let key = SharedAccessKey::generate().unwrap().to_base64();
    put(&hub, "/enrollments/dev1", key_enrollment("dev1", &key)).await;
    let mut disabled = key_enrollment("off1", &key);
    disabled["provisioningStatus"] = json!("disabled");
    put(&hub, "/enrollments/off1", disabled).await;
    let wrong = SharedAccessKey::generate().unwrap().to_base64();
    let refusals = [
        Refusal {
            what: "a wrong key",
            scope: None,
            registration_id: "dev1",
            key: wrong.clone(),
            expected: |e| matches!(e, Error::Unauthorized { .. }),
            https_code: Some(401002),
        },
        Refusal {
            what: "an unknown id scope",
            scope: Some("0ne00000000"),
            registration_id: "dev1",
            key: key.clone(),
            expected: |e| matches!(e, Error::Unauthorized { .. } | Error::NotFound { .. }),
            https_code: None,
        },
        Refusal {
            what: "a disabled enrollment",
            scope: None,
            registration_id: "off1",
            key: key.clone(),
            expected: |e| matches!(e, Error::Disabled { .. }),
            https_code: None,
        },
    ];
    for transport in TRANSPORTS {
        for refusal in &refusals {
            let scope = refusal.scope.unwrap_or(hub.dps_id_scope());
            let attestation = Attestation::symmetric_key(&refusal.key).unwrap();
            let err = client_in(&hub, scope, transport, attestation)
                .registration_id(refusal.registration_id)
                .build()
                .unwrap()
                .register()
                .await
                .unwrap_err();
            let what = refusal.what;
            assert!((refusal.expected)(&err), "{transport:?}, {what}: {err:?}");
            // Neither the key nor a token is in what the error says.
            let text = format!("{err} {err:?}");
            assert!(
                !text.contains(&refusal.key) && !text.contains("sig="),
                "{transport:?}, {what}: {text}"
            );
            if transport == Transport::Https && refusal.https_code.is_some() {
                assert_eq!(err.error_code(), refusal.https_code, "{what}");
            }
        }
    }
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_payload_reaches_dps() {
    let hub = start().await;
    let key = SharedAccessKey::generate().unwrap().to_base64();
    put(&hub, "/enrollments/pay1", key_enrollment("pay1", &key)).await;
    let result = client(
        &hub,
        Transport::Mqtt,
        Attestation::symmetric_key(&key).unwrap(),
    )
    .registration_id("pay1")
    .payload(json!({"model": "thermostat"}))
    .build()
    .unwrap()
    .register()
    .await
    .unwrap();
    assert_eq!(result.device_id(), "pay1");
    let cs = result.connection_string().unwrap();
    assert!(cs.starts_with(&format!(
        "HostName={};DeviceId=pay1;SharedAccessKey=",
        hub.hostname()
    )));
    hub.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_service_ends_in_the_overall_timeout() {
    // Accepts TCP connections and never answers (no TLS handshake).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let key = SharedAccessKey::generate().unwrap().to_base64();
    let started = tokio::time::Instant::now();
    let err =
        ProvisioningDeviceClient::builder("0ne00000001", Attestation::symmetric_key(&key).unwrap())
            .global_endpoint("localhost")
            .port(port)
            .trusted_ca_pem(certificate("some-ca").0)
            .registration_id("dev1")
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
            .register()
            .await
            .unwrap_err();
    assert!(
        matches!(err, Error::Timeout(d) if d == Duration::from_secs(5)),
        "{err:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(5));
    held.abort();
}
