//! Sends ten telemetry messages, each acknowledged by the hub.
//!
//! ```sh
//! export IOTHUB_DEVICE_CONNECTION_STRING='HostName=…;DeviceId=…;SharedAccessKey=…'
//! # Against the emulator (`azure-iot hub start`), also trust its CA:
//! export IOTHUB_CA_PEM=/path/to/data-dir/ca.pem
//! cargo run -p azure_iot_device --example send_telemetry
//! ```

// An example reports progress on standard output.
#![allow(clippy::print_stdout)]

mod common;

use azure_iot_device::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = common::connect().await?;
    for i in 0..10 {
        let message = Message::builder(format!("{{\"temperature\":{}}}", 20 + i))
            .content_type("application/json")
            .content_encoding("utf-8")
            .property("sequence", i.to_string())
            .build()?;
        client.send_event(message).await?;
        println!("message {i} acknowledged by the hub");
    }
    client.close().await;
    Ok(())
}
