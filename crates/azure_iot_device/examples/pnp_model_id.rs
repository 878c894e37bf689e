//! An IoT Plug and Play device: announces its model id when it connects, sends temperature
//! telemetry the model describes and reports a read-only property.
//!
//! The model id travels in the MQTT user name (`model-id=…`); the hub then shows it as the
//! twin's `modelId`, which is how tools find the model that describes the device.
//!
//! ```sh
//! # Against the emulator (`azure-iot hub start --data-dir ./hub`), create a device, then
//! export IOTHUB_DEVICE_CONNECTION_STRING='HostName=localhost;DeviceId=thermostat1;SharedAccessKey=…'
//! export IOTHUB_CA_PEM=./hub/ca.pem
//! # Optional: another model (default dtmi:com:example:Thermostat;1)
//! export IOTHUB_MODEL_ID='dtmi:com:example:Thermostat;1'
//! cargo run -p azure_iot_device --example pnp_model_id
//! ```

// An example reports progress on standard output.
#![allow(clippy::print_stdout)]

mod common;

use azure_iot_device::Message;
use serde_json::json;

/// The model this example follows unless `IOTHUB_MODEL_ID` names another one.
const DEFAULT_MODEL_ID: &str = "dtmi:com:example:Thermostat;1";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model_id = std::env::var("IOTHUB_MODEL_ID").unwrap_or_else(|_| DEFAULT_MODEL_ID.to_owned());
    let client = common::connect_with(common::options()?.model_id(&model_id)).await?;
    println!("connected, announcing model {model_id}");

    // Plug and Play telemetry is a JSON object whose names are the model's telemetry names;
    // content type and encoding let the hub route on the body.
    let mut max_temperature = f64::MIN;
    for i in 0..5 {
        let temperature = 20.0 + f64::from(i) * 0.5;
        max_temperature = max_temperature.max(temperature);
        let message = Message::builder(json!({ "temperature": temperature }).to_string())
            .content_type("application/json")
            .content_encoding("utf-8")
            .build()?;
        client.send_event(message).await?;
        println!("temperature {temperature} acknowledged by the hub");
    }

    // A read-only property of the model is a reported property with the same name.
    let version = client
        .update_reported_properties(&json!({ "maxTempSinceLastReboot": max_temperature }))
        .await?;
    println!("reported maxTempSinceLastReboot = {max_temperature} (reported version {version})");
    client.close().await;
    Ok(())
}
