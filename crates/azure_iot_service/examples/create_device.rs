//! Creates a device identity with keys the hub generates and prints the device's connection
//! string. The id is the first argument (default: a generated `example-…` id); if a device
//! with that id exists, its connection string is printed instead.
//!
//! Against the local emulator (`hub.json` in the data directory has the connection strings
//! and, under `ports`, the ports it listens on; `ca.pem` is its CA):
//!
//! ```sh
//! azure-iot hub start --data-dir /tmp/hub --https-port 8443 --mqtt-port 8883 --amqp-port 5671 &
//! export IOTHUB_CONNECTION_STRING="$(jq -r .connection_strings.iothubowner /tmp/hub/hub.json)"
//! export IOTHUB_CA_PEM=/tmp/hub/ca.pem IOTHUB_HTTPS_PORT=8443
//! cargo run -p azure_iot_service --example create_device -- sensor-1
//! ```
//!
//! Against a real hub, the connection string of a policy with registry write rights is enough
//! (Azure portal: the hub's "Shared access policies"):
//!
//! ```sh
//! export IOTHUB_CONNECTION_STRING='HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=…'
//! cargo run -p azure_iot_service --example create_device -- sensor-1
//! ```
//!
//! The printed string is what the device examples of `azure_iot_device` read from
//! `IOTHUB_DEVICE_CONNECTION_STRING`.

// An example reports progress on standard output.
#![allow(clippy::print_stdout)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use azure_iot_service::{Device, ErrorKind};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device_id = match std::env::args().nth(1) {
        Some(id) => id,
        None => {
            let millis = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
            format!("example-{millis}")
        }
    };
    let hub = common::service_client()?;
    let device = match hub.create_device(&Device::new(device_id.as_str())).await {
        Ok(device) => {
            println!("created device {device_id}");
            device
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            println!("device {device_id} already exists; reading its keys");
            hub.get_device(&device_id).await?
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "status: {:?}, etag: {}, generation id: {}",
        device.status,
        device.etag.as_deref().unwrap_or("-"),
        device.generation_id.as_deref().unwrap_or("-"),
    );
    let key = device.primary_key().ok_or_else(|| {
        format!("device {device_id} authenticates with a certificate, not with keys")
    })?;
    println!(
        "HostName={};DeviceId={};SharedAccessKey={key}",
        hub.host_name(),
        device.device_id
    );
    Ok(())
}
