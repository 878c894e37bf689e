//! Answers direct method calls: `echo` returns its payload, anything else gets 404.
//! Stops after `IOTHUB_METHOD_CALLS` calls (default: runs until interrupted).
//!
//! ```sh
//! export IOTHUB_DEVICE_CONNECTION_STRING='HostName=…;DeviceId=…;SharedAccessKey=…'
//! cargo run -p azure_iot_device --example direct_method
//! # then, from the service side: POST /twins/{deviceId}/methods {"methodName":"echo",...}
//! ```

// An example reports progress on standard output.
#![allow(clippy::print_stdout)]

mod common;

use azure_iot_device::MethodResponse;
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limit: Option<usize> = std::env::var("IOTHUB_METHOD_CALLS")
        .ok()
        .map(|v| v.parse())
        .transpose()?;
    let client = common::connect().await?;
    let mut calls = client.method_requests().await?;
    println!("waiting for direct method calls");
    let mut answered = 0;
    while let Some(call) = calls.recv().await {
        let (status, payload) = match call.name.as_str() {
            "echo" => (200, call.payload.clone()),
            other => (404, json!({"error": format!("no method named {other}")})),
        };
        println!("{} -> {status}", call.name);
        client
            .respond_to_method(MethodResponse::new(call.request_id, status, payload))
            .await?;
        answered += 1;
        if limit.is_some_and(|l| answered >= l) {
            break;
        }
    }
    client.close().await;
    Ok(())
}
