//! Setup shared by the examples: a client from the environment.
//!
//! `IOTHUB_DEVICE_CONNECTION_STRING` (required by [`connect`]); against the emulator also
//! `IOTHUB_CA_PEM` (path to its `ca.pem`) and, if the hub is not on the transport's usual
//! port, `IOTHUB_PORT` (`IOTHUB_MQTT_PORT` is still read for MQTT). `IOTHUB_TRANSPORT`
//! chooses the transport: `mqtt` (the default), `mqtt-ws`, `amqp` or `amqp-ws`.

// Each example compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

use azure_iot_device::{ClientOptions, DeviceClient, Transport};

/// The value of the environment variable `name`, or an error that says what to set.
pub(crate) fn required_env(name: &str, what: &str) -> Result<String, Box<dyn std::error::Error>> {
    std::env::var(name).map_err(|_| format!("set {name} to {what}").into())
}

/// The client options the environment gives: the transport (`IOTHUB_TRANSPORT`), the CA to
/// trust (`IOTHUB_CA_PEM`) and the port (`IOTHUB_PORT`, or `IOTHUB_MQTT_PORT` for MQTT), all
/// optional.
pub(crate) fn options() -> Result<ClientOptions, Box<dyn std::error::Error>> {
    let transport = match std::env::var("IOTHUB_TRANSPORT").as_deref() {
        Err(_) | Ok("mqtt") => Transport::Mqtt,
        Ok("mqtt-ws") => Transport::MqttWebSockets,
        Ok("amqp") => Transport::Amqp,
        Ok("amqp-ws") => Transport::AmqpWebSockets,
        Ok(other) => {
            return Err(format!(
                "IOTHUB_TRANSPORT is {other:?}; use mqtt, mqtt-ws, amqp or amqp-ws"
            )
            .into());
        }
    };
    let mut options = ClientOptions::default().transport(transport);
    if let Ok(path) = std::env::var("IOTHUB_CA_PEM") {
        options = options.trusted_ca_pem(std::fs::read_to_string(path)?);
    }
    let port = std::env::var("IOTHUB_PORT").or_else(|e| match transport {
        Transport::Mqtt => std::env::var("IOTHUB_MQTT_PORT"),
        _ => Err(e),
    });
    if let Ok(port) = port {
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
