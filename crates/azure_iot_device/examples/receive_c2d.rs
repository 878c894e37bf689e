//! Receives cloud-to-device messages and prints each one: body, application properties and
//! the system properties the hub set. Stops after `N` messages (first argument, or
//! `IOTHUB_C2D_MESSAGES`; default: runs until interrupted with Ctrl-C).
//!
//! ```sh
//! # Against the emulator: `azure-iot hub start --data-dir ./hub`, create a device, then
//! export IOTHUB_DEVICE_CONNECTION_STRING='HostName=localhost;DeviceId=dev1;SharedAccessKey=…'
//! export IOTHUB_CA_PEM=./hub/ca.pem
//! cargo run -p azure_iot_device --example receive_c2d -- 3
//! # then, from another shell: azure-iot c2d send --data-dir ./hub -d dev1 --data hello -p color=blue
//! # (or any service SDK's send_c2d_message).
//! ```
//!
//! The connection is opened with `clean_session = false`, so messages sent while the device
//! was offline are delivered when it connects. Each message is completed after it has been
//! printed (`ReceivedMessage::complete`): one that was not, because the program stopped
//! first, is delivered again next time.

// An example reports what it receives on standard output.
#![allow(clippy::print_stdout)]

mod common;

use azure_iot_device::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limit: Option<usize> = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("IOTHUB_C2D_MESSAGES").ok())
        .map(|v| v.parse())
        .transpose()?;
    let client = common::connect().await?;
    let mut messages = client.cloud_to_device_messages_with_settlement().await?;
    println!("waiting for cloud-to-device messages (Ctrl-C to stop)");
    let mut received = 0;
    while let Some(message) = messages.recv().await {
        received += 1;
        print_message(received, &message);
        // Over MQTT completion is the only settlement IoT Hub allows (abandon and reject
        // fail with ErrorKind::Unsupported there).
        message.complete().await?;
        if limit.is_some_and(|l| received >= l) {
            break;
        }
    }
    client.close().await;
    Ok(())
}

fn print_message(n: usize, message: &Message) {
    println!("message {n}:");
    println!("  body: {}", String::from_utf8_lossy(message.body()));
    for (name, value) in message.properties() {
        println!("  property {name} = {value}");
    }
    for (name, value) in system_properties(message) {
        println!("  system property {name} = {value}");
    }
}

/// The system properties that are set, by their usual names.
fn system_properties(message: &Message) -> Vec<(String, String)> {
    let s = message.system_properties();
    let text = [
        ("message-id", s.message_id.clone()),
        ("correlation-id", s.correlation_id.clone()),
        ("user-id", s.user_id.clone()),
        ("to", s.to.clone()),
        ("content-type", s.content_type.clone()),
        ("content-encoding", s.content_encoding.clone()),
        ("expiry-time-utc", s.expiry_time_utc.map(|t| t.to_string())),
        (
            "creation-time-utc",
            s.creation_time_utc.map(|t| t.to_string()),
        ),
        ("enqueued-time", s.enqueued_time.map(|t| t.to_string())),
        ("sequence-number", s.sequence_number.map(|n| n.to_string())),
        ("delivery-count", s.delivery_count.map(|n| n.to_string())),
        ("ack", s.ack.map(|a| a.to_string())),
        ("lock-token", s.lock_token.clone()),
    ];
    text.into_iter()
        .filter_map(|(name, value)| value.map(|v| (name.to_owned(), v)))
        .chain(s.other.iter().cloned())
        .collect()
}
