//! Setup shared by the examples: a service client from the environment.
//!
//! * `IOTHUB_CONNECTION_STRING` (required): a shared access policy's connection string,
//!   `HostName=…;SharedAccessKeyName=…;SharedAccessKey=…` (`iothubowner` can do everything the
//!   examples do).
//! * `IOTHUB_CA_PEM` (optional): path of a CA certificate (PEM) to trust instead of the
//!   operating system's roots: the emulator's `ca.pem`.
//! * `IOTHUB_HTTPS_PORT`, `IOTHUB_AMQP_PORT` (optional): ports other than 443 and 5671, for an
//!   emulator started with other ports (its `hub.json` lists them under `ports`).

use azure_iot_service::{ServiceClient, ServiceClientOptions};

/// A client built from the connection string and options the environment gives.
pub(crate) fn service_client() -> Result<ServiceClient, Box<dyn std::error::Error>> {
    let connection_string = std::env::var("IOTHUB_CONNECTION_STRING").map_err(
        |_| "set IOTHUB_CONNECTION_STRING to a shared access policy's connection string",
    )?;
    let mut options = ServiceClientOptions::default();
    if let Ok(path) = std::env::var("IOTHUB_CA_PEM") {
        let pem = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read IOTHUB_CA_PEM ({path}): {e}"))?;
        options = options.trusted_ca_pem(pem);
    }
    if let Some(port) = port("IOTHUB_HTTPS_PORT")? {
        options = options.https_port(port);
    }
    if let Some(port) = port("IOTHUB_AMQP_PORT")? {
        options = options.amqp_port(port);
    }
    Ok(ServiceClient::from_connection_string(
        &connection_string,
        options,
    )?)
}

/// The port in the environment variable `name`, if it is set.
fn port(name: &str) -> Result<Option<u16>, String> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map(Some)
            .map_err(|e| format!("{name}={value:?} is not a port number: {e}")),
        Err(_) => Ok(None),
    }
}
