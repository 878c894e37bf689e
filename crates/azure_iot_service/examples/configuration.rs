//! Automatic device management: creates a configuration that sets a desired property on every
//! device tagged with a site, tags one device so it is targeted, prints the configuration's
//! metrics and the device's desired properties, then deletes the configuration.
//!
//! Arguments: `[device-id] [site]`. Defaults: `sensor-1`, `north`.
//!
//! Against the local emulator (`hub.json` in the data directory has the connection strings
//! and, under `ports`, the ports it listens on; `ca.pem` is its CA):
//!
//! ```sh
//! azure-iot hub start --data-dir /tmp/hub --https-port 8443 --mqtt-port 8883 --amqp-port 5671 &
//! export IOTHUB_CONNECTION_STRING="$(jq -r .connection_strings.iothubowner /tmp/hub/hub.json)"
//! export IOTHUB_CA_PEM=/tmp/hub/ca.pem IOTHUB_HTTPS_PORT=8443
//! cargo run -p azure_iot_service --example configuration -- sensor-1 north
//! ```
//!
//! Against a real hub, set only `IOTHUB_CONNECTION_STRING` (a policy with registry write
//! rights) and run the same command. The emulator applies a configuration at once; a real hub
//! does it within minutes, so the desired property may not show there yet.

// An example reports progress on standard output.
#![allow(clippy::print_stdout)]

mod common;

use azure_iot_service::{Configuration, Device, ErrorKind, IfMatch, TwinPatch};
use serde_json::{Map, json};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let device_id = args.next().unwrap_or_else(|| "sensor-1".to_owned());
    let site = args.next().unwrap_or_else(|| "north".to_owned());
    let hub = common::service_client()?;

    match hub.create_device(&Device::new(&device_id)).await {
        Ok(_) => println!("created device {device_id}"),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => println!("using device {device_id}"),
        Err(e) => return Err(e.into()),
    }
    let tags = TwinPatch::new().tags(json!({ "site": site }))?;
    hub.update_twin(&device_id, &tags, IfMatch::Any).await?;

    let id = format!("interval-{site}");
    let mut config = Configuration::new(&id, format!("tags.site = '{site}'"), 10);
    config.content.device_content = Some(Map::from_iter([(
        "properties.desired.telemetryInterval".to_owned(),
        json!(30),
    )]));
    config.metrics.queries.insert(
        "reporting30".into(),
        "SELECT deviceId FROM devices WHERE properties.reported.telemetryInterval = 30".into(),
    );
    hub.create_configuration(&config).await?;
    let config = hub.get_configuration(&id).await?;
    println!("configuration {id}");
    println!("  system metrics: {:?}", config.system_metrics.results);
    println!("  custom metrics: {:?}", config.metrics.results);
    let twin = hub.get_twin(&device_id).await?;
    println!(
        "  {device_id} desired telemetryInterval: {}",
        twin.properties
            .desired
            .get("telemetryInterval")
            .unwrap_or(&json!(null))
    );

    hub.delete_configuration(&id, IfMatch::etag_or_any(config.etag.as_deref()))
        .await?;
    println!("deleted configuration {id}");
    Ok(())
}
