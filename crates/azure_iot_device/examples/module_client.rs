//! A module identity: sends a message on an output, reads the module twin, then answers
//! direct method calls made to the module (`getStatus` answers 200, anything else 404).
//! Stops after `IOTHUB_METHOD_CALLS` calls (default: runs until interrupted).
//!
//! ```sh
//! # Against the emulator (`azure-iot hub start --data-dir ./hub`), create a device and a
//! # module on it (a service SDK's create_module_with_sas), then:
//! export IOTHUB_MODULE_CONNECTION_STRING='HostName=localhost;DeviceId=edge1;ModuleId=filter;SharedAccessKey=…'
//! export IOTHUB_CA_PEM=./hub/ca.pem
//! cargo run -p azure_iot_device --example module_client
//! # then invoke a method on module `filter` of `edge1` from the service side
//! # (POST /twins/edge1/modules/filter/methods {"methodName":"getStatus",...}).
//! ```

// An example reports progress on standard output.
#![allow(clippy::print_stdout)]

mod common;

use azure_iot_device::{Message, MethodResponse, ModuleClient};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limit: Option<usize> = std::env::var("IOTHUB_METHOD_CALLS")
        .ok()
        .map(|v| v.parse())
        .transpose()?;
    let connection_string = common::required_env(
        "IOTHUB_MODULE_CONNECTION_STRING",
        "a module connection string (with ModuleId=…)",
    )?;
    let client =
        ModuleClient::from_connection_string(&connection_string, common::options()?).await?;
    let identity = client.identity().clone();
    println!("connected as {}", identity.client_id());

    // An output message: IoT Edge routes pick it up by output name; IoT Hub stores it with
    // the output name as a system property.
    let message = Message::builder("{\"filtered\":true}")
        .content_type("application/json")
        .content_encoding("utf-8")
        .build()?;
    client.send_output("output1", message).await?;
    println!("message on output1 acknowledged by the hub");

    let twin = client.get_twin().await?;
    println!("module twin desired: {}", twin.desired);
    println!("module twin reported: {}", twin.reported);

    // Subscribe before saying we are ready, so a call made right after is not missed.
    let mut calls = client.method_requests().await?;
    println!("waiting for direct method calls to the module");
    let mut answered = 0;
    while let Some(call) = calls.recv().await {
        let (status, payload) = match call.name.as_str() {
            "getStatus" => (
                200,
                json!({"module": identity.client_id(), "status": "running"}),
            ),
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
