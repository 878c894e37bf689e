//! Provision a device of an enrollment group, then send telemetry to the hub DPS assigned.
//!
//! ```text
//! cargo run -p azure_iot_provisioning_device --example provision
//! ```
//!
//! With no settings it starts the emulator in-process (hub and DPS on free ports, state in
//! memory), creates the enrollment group `fleet` through DPS's service API, and provisions
//! `sensor-1` with the group key. Against a real DPS, set `DPS_ID_SCOPE`, `DPS_GROUP_KEY` and
//! optionally `DPS_REGISTRATION_ID` (the global endpoint and the system's roots are used).
#![allow(clippy::print_stdout, clippy::expect_used)]

use azure_iot_device::{ClientOptions, Message, Transport};
use azure_iot_provisioning_device::{Attestation, ProvisioningDeviceClient};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registration_id =
        std::env::var("DPS_REGISTRATION_ID").unwrap_or_else(|_| "sensor-1".to_owned());
    let (builder, hub_options, emulator) = match (
        std::env::var("DPS_ID_SCOPE"),
        std::env::var("DPS_GROUP_KEY"),
    ) {
        (Ok(scope), Ok(key)) => (
            ProvisioningDeviceClient::builder(scope, Attestation::group_key(&key)?),
            ClientOptions::default(),
            None,
        ),
        _ => {
            let hub = azure_iot_test::emulator().await;
            let group_key = azure_iot_core::sas::SharedAccessKey::generate()?.to_base64();
            azure_iot_test::dps_put(
                &hub,
                "/enrollmentGroups/fleet",
                azure_iot_test::key_enrollment("enrollmentGroupId", "fleet", &group_key),
            )
            .await;
            let builder = ProvisioningDeviceClient::builder(
                hub.dps_id_scope(),
                Attestation::group_key(&group_key)?,
            )
            .global_endpoint("localhost")
            .port(hub.mqtt_addr().port())
            .trusted_ca_pem(hub.ca_pem());
            let options = ClientOptions::default()
                .port(hub.mqtt_addr().port())
                .trusted_ca_pem(hub.ca_pem());
            (builder, options, Some(hub))
        }
    };
    let result = builder
        .registration_id(registration_id)
        .transport(Transport::Mqtt)
        .build()?
        .register()
        .await?;
    println!(
        "{} assigned to {} as {} ({:?})",
        result.registration_id(),
        result.assigned_hub(),
        result.device_id(),
        result.substatus()
    );
    let device = result.device_client(hub_options).await?;
    device
        .send_event(Message::new("{\"temperature\":21.5}").expect("a small message"))
        .await?;
    println!("telemetry sent");
    device.close().await;
    if let Some(hub) = emulator {
        hub.shutdown().await;
    }
    Ok(())
}
