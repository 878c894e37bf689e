//! TPM attestation with a real software TPM (swtpm): the provider's keys, and registration
//! with the in-process emulator's DPS over HTTPS, AMQP and AMQP over WebSockets, followed by
//! a hub connection whose SAS tokens the TPM signs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_iot_device::{ClientOptions, ConnectionState, DeviceClient, Message, TokenProvider};
use azure_iot_emulator::EmulatorHandle;
use azure_iot_provisioning_device::{
    Attestation, Error, HubCredential, ProvisioningDeviceClient, RegistrationStatus,
    TpmAttestation, TpmLocation, Transport,
};
use azure_iot_test::{HubEndpoint, RestClient, SoftwareTpm};
use serde_json::json;

fn location(swtpm: &SoftwareTpm) -> TpmLocation {
    TpmLocation::Simulator {
        host: "127.0.0.1".to_owned(),
        port: swtpm.port(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_exposes_the_persisted_ek_srk_and_derived_registration_id() {
    let swtpm = SoftwareTpm::start();
    // swtpm serves one connection at a time: each handle is dropped before the next opens.
    let first = TpmAttestation::open(location(&swtpm)).await.unwrap();
    let (ek, srk) = (
        first.endorsement_key().to_vec(),
        first.storage_root_key().to_vec(),
    );
    drop(first);
    // The keys are the ones persisted at the SDKs' handles…
    swtpm.tool("readpublic", &["-c", "0x81010001", "-o", "ek.pub"]);
    assert_eq!(swtpm.read("ek.pub"), ek);
    swtpm.tool("readpublic", &["-c", "0x81000001", "-o", "srk.pub"]);
    assert_eq!(swtpm.read("srk.pub"), srk);
    // …and are reused when the TPM is opened again.
    let tpm = TpmAttestation::open(location(&swtpm)).await.unwrap();
    assert_eq!(tpm.endorsement_key(), ek, "the EK is reused");
    assert_eq!(tpm.storage_root_key(), srk);
    let id = tpm.registration_id();
    assert_eq!(
        id,
        azure_iot_protocol::tpm::default_registration_id(tpm.endorsement_key())
    );
    assert_eq!(id.len(), 52, "base32 of 32 bytes, unpadded");
    assert!(format!("{tpm:?}").contains(&id));
    // The builder takes the derived id when none is given.
    let client = ProvisioningDeviceClient::builder("0ne0001", Attestation::Tpm(tpm))
        .transport(Transport::Https)
        .build()
        .unwrap();
    assert_eq!(client.registration_id(), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_with_a_tpm_is_unsupported_and_a_missing_tpm_is_a_typed_error() {
    let swtpm = SoftwareTpm::start();
    let tpm = TpmAttestation::open(location(&swtpm)).await.unwrap();
    let err = ProvisioningDeviceClient::builder("0ne0001", Attestation::Tpm(tpm))
        .global_endpoint("localhost")
        .port(1)
        .build()
        .unwrap()
        .register()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("HTTPS") && err.to_string().contains("AMQP"));

    let port = swtpm.port();
    drop(swtpm);
    let err = TpmAttestation::open(TpmLocation::Simulator {
        host: "127.0.0.1".to_owned(),
        port,
    })
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Tpm {
                step: "opening the TPM",
                ..
            }
        ),
        "{err}"
    );
}

/// The emulator's port for `transport`.
fn port(hub: &EmulatorHandle, transport: Transport) -> u16 {
    match transport {
        Transport::Amqp => hub.amqp_addr().port(),
        _ => hub.https_addr().port(),
    }
}

/// Creates the individual enrollment of `tpm`'s EK (with its derived registration id).
async fn enroll(hub: &EmulatorHandle, tpm: &TpmAttestation) {
    let id = tpm.registration_id();
    azure_iot_test::dps_put(
        hub,
        &format!("/enrollments/{id}"),
        json!({
            "registrationId": id,
            "attestation": {"type": "tpm", "tpm": {"endorsementKey": tpm.endorsement_key_base64()}},
        }),
    )
    .await;
}

/// Registers `tpm` with the emulator's DPS over `transport`.
async fn register(
    hub: &EmulatorHandle,
    tpm: &TpmAttestation,
    transport: Transport,
) -> Result<azure_iot_provisioning_device::RegistrationResult, Error> {
    ProvisioningDeviceClient::builder(hub.dps_id_scope(), Attestation::Tpm(tpm.clone()))
        .global_endpoint("localhost")
        .port(port(hub, transport))
        .transport(transport)
        .trusted_ca_pem(hub.ca_pem())
        .build()
        .unwrap()
        .register()
        .await
}

/// Registers over `transport`, connects to the hub with TPM-signed
/// tokens and sends telemetry.
async fn register_and_send(hub: &EmulatorHandle, tpm: &TpmAttestation, transport: Transport) {
    let result = register(hub, tpm, transport)
        .await
        .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
    assert_eq!(result.status(), RegistrationStatus::Assigned);
    assert_eq!(result.registration_id(), tpm.registration_id());
    assert!(matches!(result.credential(), HubCredential::Tpm(_)));
    assert!(
        result.connection_string().is_none(),
        "no key leaves the TPM"
    );
    let hub_transport = match transport {
        Transport::Https => Transport::Mqtt,
        other => other,
    };
    let options = ClientOptions::default()
        .transport(hub_transport)
        .port(match hub_transport {
            Transport::Mqtt => hub.mqtt_addr().port(),
            other => port(hub, other),
        })
        .trusted_ca_pem(hub.ca_pem());
    let device = result
        .device_client(options)
        .await
        .unwrap_or_else(|e| panic!("{transport:?} at the hub: {e}"));
    device
        .send_event(Message::new(format!("tpm over {transport:?}")).unwrap())
        .await
        .unwrap();
    device.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_device_registers_on_every_tpm_transport_and_sends_telemetry() {
    let swtpm = SoftwareTpm::start();
    let tpm = TpmAttestation::open(location(&swtpm)).await.unwrap();
    let hub = azure_iot_test::dps_emulator().await;
    enroll(&hub, &tpm).await;
    // Each registration activates a new identity key; the hub connection uses the last.
    for transport in [Transport::Https, Transport::Amqp, Transport::AmqpWebSockets] {
        register_and_send(&hub, &tpm, transport).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unenrolled_tpm_is_refused() {
    let swtpm = SoftwareTpm::start();
    let tpm = TpmAttestation::open(location(&swtpm)).await.unwrap();
    let hub = azure_iot_test::dps_emulator().await;
    for transport in [Transport::Https, Transport::Amqp] {
        let err = register(&hub, &tpm, transport).await.unwrap_err();
        assert!(
            matches!(err, Error::Unauthorized { .. }),
            "{transport:?}: {err}"
        );
    }
}

/// The hub's current primary key for `device_id` (the registry's view, through the service API).
async fn hub_key(hub: &EmulatorHandle, device_id: &str) -> String {
    let service = RestClient::new(&HubEndpoint::of(hub), "iothubowner");
    let reply = service.get(&format!("/devices/{device_id}")).await;
    assert!(reply.status.is_success(), "{device_id}: {:?}", reply.body);
    reply.body["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap_or_else(|| panic!("a key for {device_id}: {:?}", reply.body))
        .to_owned()
}

/// The expiry (`se`, Unix seconds) of a SAS token.
fn expiry(token: &str) -> u64 {
    token
        .split(['&', ' '])
        .find_map(|field| field.strip_prefix("se="))
        .and_then(|se| se.trim().parse().ok())
        .unwrap_or_else(|| panic!("no expiry in a token of {} characters", token.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_signed_hub_tokens_are_renewed_and_reprovisioning_changes_the_hub_key() {
    let swtpm = SoftwareTpm::start();
    let tpm = TpmAttestation::open(location(&swtpm)).await.unwrap();
    let hub = azure_iot_test::dps_emulator().await;
    enroll(&hub, &tpm).await;
    let first = register(&hub, &tpm, Transport::Https).await.unwrap();
    let device_id = first.device_id().to_owned();
    let old_key = hub_key(&hub, &device_id).await;
    let options = || {
        ClientOptions::default()
            .transport(Transport::Mqtt)
            .port(hub.mqtt_addr().port())
            .trusted_ca_pem(hub.ca_pem())
            // The hub closes a connection whose token expires; the client renews at 85 %.
            .token_ttl(Duration::from_secs(3))
    };

    // The provider `device_client` uses, wrapped to see every token the TPM signs.
    // Bounded: the test reads each token as the TPM signs it (a few per test); should it ever
    // fall 64 behind, later tokens are not recorded and the renewal checks fail, never block.
    let (signed, mut tokens) = tokio::sync::mpsc::channel::<String>(64);
    let provider = {
        let inner = Arc::new(tpm.hub_token_provider(
            first.assigned_hub(),
            &device_id,
            options().token_lifetime(),
        ));
        move || {
            let inner = inner.clone();
            let signed = signed.clone();
            async move {
                let token = inner.token().await?;
                let _ = signed.try_send(token.clone());
                Ok::<_, azure_iot_device::TokenProviderError>(token)
            }
        }
    };
    let device = DeviceClient::from_token_provider(
        first.assigned_hub(),
        &device_id,
        None,
        provider,
        options(),
    )
    .await
    .unwrap();
    let state = device.watch_connection_state();
    let mut previous = tokens.recv().await.unwrap(); // the first connection's token
    let first_expiry = expiry(&previous);
    // Two renewals: the second comes after the first token has expired, so the connection
    // lives on renewed tokens only. Each is a new signature with a later expiry.
    for renewal in 1..=2 {
        let token = tokio::time::timeout(Duration::from_secs(20), tokens.recv())
            .await
            .unwrap_or_else(|_| panic!("renewal {renewal}: the TPM is asked for a new token"))
            .unwrap();
        // (`assert!`, not `assert_ne!`: a failure does not print the tokens)
        assert!(token != previous, "renewal {renewal} signs a new token");
        assert!(
            expiry(&token) > expiry(&previous),
            "renewal {renewal} lives longer"
        );
        previous = token;
    }
    assert!(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            >= first_expiry,
        "the first token has expired"
    );
    device
        .send_event(Message::new("after the renewals").unwrap())
        .await
        .unwrap();
    assert!(
        !state.has_changed().unwrap(),
        "renewal is not a disconnection"
    );
    assert_eq!(device.connection_state(), ConnectionState::Connected);
    device.close().await;

    // Re-provisioning activates a new identity key: the hub's key changes with it.
    let second = register(&hub, &tpm, Transport::Amqp).await.unwrap();
    assert_eq!(second.device_id(), device_id);
    let new_key = hub_key(&hub, &device_id).await;
    assert_ne!(
        new_key, old_key,
        "re-provisioning gives the device a new key"
    );
    let refused = DeviceClient::from_symmetric_key(
        second.assigned_hub(),
        &device_id,
        None,
        &old_key,
        options(),
    )
    .await
    .map(|_| ())
    .unwrap_err();
    assert_eq!(
        refused.kind(),
        azure_iot_device::ErrorKind::Unauthorized,
        "{refused}"
    );
    // The TPM now signs with the new key, which the hub accepts (and so does the key itself).
    let device = second.device_client(options()).await.unwrap();
    device
        .send_event(Message::new("after re-provisioning").unwrap())
        .await
        .unwrap();
    device.close().await;
    let with_key = DeviceClient::from_symmetric_key(
        second.assigned_hub(),
        &device_id,
        None,
        &new_key,
        options(),
    )
    .await
    .unwrap();
    with_key.close().await;
}
