//! What the service client's integration tests share: a client for an in-process emulator and
//! this project's device client connected to it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_device::{ClientOptions, DeviceClient};
use azure_iot_emulator::EmulatorHandle;
use azure_iot_service::{Device, ServiceClient, ServiceClientOptions};

/// How long any one step may take.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Options trusting the emulator's CA, on its ports.
pub(crate) fn options(hub: &EmulatorHandle) -> ServiceClientOptions {
    ServiceClientOptions::default()
        .trusted_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .amqp_port(hub.amqp_addr().port())
        .request_timeout(WAIT)
}

/// A service client with `policy`'s connection string.
pub(crate) fn service(hub: &EmulatorHandle, policy: &str) -> ServiceClient {
    ServiceClient::from_connection_string(hub.connection_string(policy).unwrap(), options(hub))
        .unwrap()
}

/// This project's device client for `device`, connected over MQTT.
pub(crate) async fn connect_device(hub: &EmulatorHandle, device: &Device) -> DeviceClient {
    let cs = format!(
        "HostName={};DeviceId={};SharedAccessKey={}",
        hub.hostname(),
        device.device_id,
        device.primary_key().unwrap()
    );
    DeviceClient::from_connection_string(
        &cs,
        ClientOptions::default()
            .trusted_ca_pem(hub.ca_pem())
            .port(hub.mqtt_addr().port())
            .operation_timeout(WAIT),
    )
    .await
    .unwrap()
}
