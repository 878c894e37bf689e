//! TPM attestation with a real software TPM (swtpm): the provider's keys, and registration
//! with the in-process emulator's DPS over HTTPS, AMQP and AMQP over WebSockets, followed by
//! a hub connection whose SAS tokens the TPM signs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use azure_iot_device::{ClientOptions, Message};
use azure_iot_emulator::EmulatorHandle;
use azure_iot_provisioning_device::{
    Attestation, Error, HubCredential, ProvisioningDeviceClient, RegistrationStatus,
    TpmAttestation, TpmLocation, Transport,
};
use azure_iot_test::SoftwareTpm;
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
    let id = tpm.registration_id();
    azure_iot_test::dps_put(
        &hub,
        &format!("/enrollments/{id}"),
        json!({
            "registrationId": id,
            "attestation": {"type": "tpm", "tpm": {"endorsementKey": tpm.endorsement_key_base64()}},
        }),
    )
    .await;
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
