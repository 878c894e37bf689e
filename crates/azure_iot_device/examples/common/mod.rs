//! Setup shared by the examples: a client from the environment.
//!
//! `IOTHUB_DEVICE_CONNECTION_STRING` (required); against the emulator also `IOTHUB_CA_PEM`
//! (path to its `ca.pem`) and, if it is not on 8883, `IOTHUB_MQTT_PORT`.

use azure_iot_device::{ClientOptions, DeviceClient};

/// Connects with the connection string and options the environment gives.
pub(crate) async fn connect() -> Result<DeviceClient, Box<dyn std::error::Error>> {
    let connection_string = std::env::var("IOTHUB_DEVICE_CONNECTION_STRING")
        .map_err(|_| "set IOTHUB_DEVICE_CONNECTION_STRING to a device connection string")?;
    let mut options = ClientOptions::default();
    if let Ok(path) = std::env::var("IOTHUB_CA_PEM") {
        options = options.trusted_ca_pem(std::fs::read_to_string(path)?);
    }
    if let Ok(port) = std::env::var("IOTHUB_MQTT_PORT") {
        options = options.port(port.parse()?);
    }
    Ok(DeviceClient::from_connection_string(&connection_string, options).await?)
}
