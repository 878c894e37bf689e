//! Sends a cloud-to-device message that asks for full delivery feedback, then waits for the
//! hub's feedback record of that message and prints its status: `Success` once the device
//! has completed it; `Expired`, `Rejected`, `DeliveryCountExceeded` or `Purged` otherwise.
//!
//! Arguments: `<device-id> [body] [wait-seconds] [ttl-seconds]`. Defaults: body `hello`,
//! wait 60 s, the hub's default time to live. With no device connected, a short TTL
//! (`… hello 30 5`) shows the `Expired` record.
//!
//! This example completes every feedback batch it reads, including records of other
//! messages: the hub hands each batch to one receiver, so run it while no other feedback
//! reader (such as `azure-iot hub monitor-feedback`) is running.
//!
//! Against the local emulator (`hub.json` in the data directory has the connection strings
//! and, under `ports`, the ports it listens on; `ca.pem` is its CA):
//!
//! ```sh
//! azure-iot hub start --data-dir /tmp/hub --https-port 8443 --mqtt-port 8883 --amqp-port 5671 &
//! export IOTHUB_CONNECTION_STRING="$(jq -r .connection_strings.iothubowner /tmp/hub/hub.json)"
//! export IOTHUB_CA_PEM=/tmp/hub/ca.pem IOTHUB_HTTPS_PORT=8443 IOTHUB_AMQP_PORT=5671
//! cargo run -p azure_iot_service --example c2d_feedback -- sensor-1 '{"command":"on"}' 60
//! # meanwhile, connect a device that receives (and so completes) cloud-to-device messages
//! ```
//!
//! Against a real hub, set only `IOTHUB_CONNECTION_STRING` (a policy with service connect
//! rights, such as `iothubowner` or `service`); the hub batches feedback, so a record can take
//! a minute or more to arrive.

// An example reports progress on standard output.
#![allow(clippy::print_stdout)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_iot_service::{CloudToDeviceMessage, FeedbackMode, FeedbackReceiver, FeedbackRecord};

const USAGE: &str = "usage: c2d_feedback <device-id> [body] [wait-seconds] [ttl-seconds]";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let device_id = args.next().ok_or(USAGE)?;
    let body = args.next().unwrap_or_else(|| "hello".to_owned());
    let wait: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(60);
    let ttl: Option<u64> = args.next().map(|s| s.parse()).transpose()?;

    let hub = common::service_client()?;
    let messaging = hub.messaging().await?;
    let mut feedback = messaging.feedback().await?;

    let millis = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let message_id = format!("example-{millis}");
    let mut message = CloudToDeviceMessage::new(body)
        .message_id(message_id.as_str())
        .feedback(FeedbackMode::Full);
    if let Some(ttl) = ttl {
        message = message.time_to_live(Duration::from_secs(ttl));
    }
    messaging.send(&device_id, message).await?;
    println!("sent message {message_id} to {device_id}; waiting up to {wait} s for its feedback");

    match tokio::time::timeout(
        Duration::from_secs(wait),
        record_of(&mut feedback, &message_id),
    )
    .await
    {
        Ok(record) => {
            let record = record?;
            println!(
                "feedback for {}: {:?} ({}) at {}",
                record.original_message_id,
                record.status_code,
                record.description,
                record.enqueued_time_utc
            );
        }
        Err(_) => println!(
            "no feedback for {message_id} within {wait} s: the device has not completed, \
             rejected or let the message expire yet"
        ),
    }
    feedback.close().await?;
    messaging.close().await?;
    Ok(())
}

/// Reads feedback batches until one holds the record of `message_id`.
///
/// Batches are read and completed one at a time, rather than through
/// `FeedbackReceiver::into_stream`, because the stream completes a batch only when the record
/// after its last one is asked for: stopping at our record would leave its batch unsettled.
async fn record_of(
    feedback: &mut FeedbackReceiver,
    message_id: &str,
) -> Result<FeedbackRecord, azure_iot_service::Error> {
    loop {
        let batch = feedback.next_batch().await?;
        let mine = batch
            .records
            .iter()
            .find(|r| r.original_message_id == message_id)
            .cloned();
        for other in batch
            .records
            .iter()
            .filter(|r| r.original_message_id != message_id)
        {
            println!(
                "(feedback for another message, {}: {:?})",
                other.original_message_id, other.status_code
            );
        }
        feedback.complete(batch).await?;
        if let Some(record) = mine {
            return Ok(record);
        }
    }
}
