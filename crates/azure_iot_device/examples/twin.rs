//! Reads the twin, reports the device's state, then prints desired-property changes
//! (including one made while the device was offline, after a reconnect).
//! Stops after `IOTHUB_DESIRED_PATCHES` patches (default: runs until interrupted).
//!
//! ```sh
//! export IOTHUB_DEVICE_CONNECTION_STRING='HostName=…;DeviceId=…;SharedAccessKey=…'
//! cargo run -p azure_iot_device --example twin
//! ```

// An example reports progress on standard output.
#![allow(clippy::print_stdout)]

mod common;

use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limit: Option<usize> = std::env::var("IOTHUB_DESIRED_PATCHES")
        .ok()
        .map(|v| v.parse())
        .transpose()?;
    let client = common::connect().await?;
    let twin = client.get_twin().await?;
    println!("desired: {}", twin.desired);
    println!("reported: {}", twin.reported);
    let version = client
        .update_reported_properties(&json!({"firmware": "1.0.0", "status": "running"}))
        .await?;
    println!("reported properties now at version {version}");
    let mut patches = client.desired_property_patches().await?;
    let mut seen = 0;
    while let Some(patch) = patches.recv().await {
        println!("desired version {}: {}", patch.version, patch.patch);
        seen += 1;
        if limit.is_some_and(|l| seen >= l) {
            break;
        }
    }
    client.close().await;
    Ok(())
}
