//! Sets a desired property on a device's twin, then reads the twin once a second and prints
//! the reported properties each time they change, for up to a number of seconds (or until the
//! device reports the property back with the desired value, a common way to acknowledge).
//!
//! Arguments: `<device-id> [property] [value] [seconds]`; the value is JSON if it parses as
//! JSON, else a string. Defaults: `telemetryInterval`, `5`, 30 seconds.
//!
//! Against the local emulator (`hub.json` in the data directory has the connection strings
//! and, under `ports`, the ports it listens on; `ca.pem` is its CA):
//!
//! ```sh
//! azure-iot hub start --data-dir /tmp/hub --https-port 8443 --mqtt-port 8883 --amqp-port 5671 &
//! export IOTHUB_CONNECTION_STRING="$(jq -r .connection_strings.iothubowner /tmp/hub/hub.json)"
//! export IOTHUB_CA_PEM=/tmp/hub/ca.pem IOTHUB_HTTPS_PORT=8443
//! cargo run -p azure_iot_service --example create_device -- sensor-1
//! cargo run -p azure_iot_service --example twin_desired_reported -- sensor-1 telemetryInterval 10
//! # meanwhile, as the device (it reports its state and prints desired changes):
//! IOTHUB_DEVICE_CONNECTION_STRING='HostName=localhost;DeviceId=sensor-1;SharedAccessKey=…' \
//!     cargo run -p azure_iot_device --example twin
//! ```
//!
//! Against a real hub, set only `IOTHUB_CONNECTION_STRING` (a policy with service connect and
//! registry read rights, such as `iothubowner` or `service`) and run the same commands.

// An example reports progress on standard output.
#![allow(clippy::print_stdout)]

mod common;

use std::time::Duration;

use azure_iot_service::{IfMatch, TwinPatch};
use serde_json::{Map, Value};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let device_id = args
        .next()
        .ok_or("usage: twin_desired_reported <device-id> [property] [value] [seconds]")?;
    let name = args
        .next()
        .unwrap_or_else(|| "telemetryInterval".to_owned());
    let value = args.next().map_or(Value::from(5), |text| {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    });
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);

    let hub = common::service_client()?;
    let mut desired = Map::new();
    desired.insert(name.clone(), value.clone());
    let twin = hub
        .update_twin(
            &device_id,
            &TwinPatch::new().desired(Value::Object(desired))?,
            IfMatch::Any,
        )
        .await?;
    println!(
        "desired {name} = {value} (desired version {})",
        twin.properties.desired.version.unwrap_or_default()
    );

    // Watch the reported section: its `$version` grows with every device update.
    let mut last_seen = None;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    for _ in 0..=seconds {
        ticks.tick().await;
        let reported = hub.get_twin(&device_id).await?.properties.reported;
        let version = reported.version;
        if last_seen != Some(version) {
            println!(
                "reported (version {}): {}",
                version.unwrap_or_default(),
                Value::Object(reported.properties.clone())
            );
            last_seen = Some(version);
        }
        if reported.get(&name) == Some(&value) {
            println!("the device reported {name} = {value} back");
            return Ok(());
        }
    }
    println!("stopped watching after {seconds} s");
    Ok(())
}
