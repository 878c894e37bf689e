//! Setup shared by the examples: a client from the environment.
//!
//! `IOTHUB_DEVICE_CONNECTION_STRING` (required by [`connect`]); against the emulator also
//! `IOTHUB_CA_PEM` (path to its `ca.pem`) and, if it is not on 8883, `IOTHUB_MQTT_PORT`.

// Each example compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

use azure_iot_device::{ClientOptions, DeviceClient};

/// The value of the environment variable `name`, or an error that says what to set.
pub(crate) fn required_env(name: &str, what: &str) -> Result<String, Box<dyn std::error::Error>> {
    std::env::var(name).map_err(|_| format!("set {name} to {what}").into())
}

/// The client options the environment gives: the CA to trust (`IOTHUB_CA_PEM`) and the MQTT
/// port (`IOTHUB_MQTT_PORT`), both optional.
pub(crate) fn options() -> Result<ClientOptions, Box<dyn std::error::Error>> {
    let mut options = ClientOptions::default();
    if let Ok(path) = std::env::var("IOTHUB_CA_PEM") {
        options = options.trusted_ca_pem(std::fs::read_to_string(path)?);
    }
    if let Ok(port) = std::env::var("IOTHUB_MQTT_PORT") {
        options = options.port(port.parse()?);
    }
    Ok(options)
}

/// Connects with the connection string and options the environment gives.
pub(crate) async fn connect() -> Result<DeviceClient, Box<dyn std::error::Error>> {
    connect_with(options()?).await
}

/// Connects with the environment's connection string and the given options (start from
/// [`options`] to keep the environment's CA and port).
pub(crate) async fn connect_with(
    options: ClientOptions,
) -> Result<DeviceClient, Box<dyn std::error::Error>> {
    let connection_string = required_env(
        "IOTHUB_DEVICE_CONNECTION_STRING",
        "a device connection string",
    )?;
    Ok(DeviceClient::from_connection_string(&connection_string, options).await?)
}
