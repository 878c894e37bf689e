//! Reads device-to-cloud messages from the hub's built-in Event Hubs-compatible endpoint and
//! prints each with its device, partition, sequence number, properties and annotations.
//!
//! Arguments: `[earliest|latest] [count]`. Defaults: `latest` (only what arrives from now
//! on), no limit.
//!
//! Environment:
//! * `IOTHUB_CONNECTION_STRING`: either the hub's policy connection string
//!   (`HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`; the reader asks the hub where its
//!   endpoint is, as the official SDKs' samples do) or the endpoint's own Event Hubs
//!   connection string (`Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=…`,
//!   the portal's "Built-in endpoints" page; the emulator's `hub.json` under `event_hubs`).
//! * `IOTHUB_CA_PEM` (optional): a CA certificate (PEM) to trust: the emulator's `ca.pem`.
//! * `IOTHUB_AMQP_PORT` (optional): the hub's AMQP port for the redirect (an emulator
//!   started with another port than 5671).
//! * `CONSUMER_GROUP` (optional): the consumer group (`$Default`).
//!
//! Against the local emulator:
//!
//! ```sh
//! azure-iot hub start --data-dir /tmp/hub &
//! export IOTHUB_CONNECTION_STRING="$(jq -r .event_hubs.connection_string /tmp/hub/hub.json)"
//! export IOTHUB_CA_PEM=/tmp/hub/ca.pem
//! cargo run -p azure_iot_service --example read_telemetry -- earliest 10
//! ```

// An example reports progress on standard output.
#![allow(clippy::print_stdout)]

use azure_iot_service::{EventHubConsumer, EventHubConsumerOptions, EventPosition};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let start = match args.next().as_deref() {
        None | Some("latest") => EventPosition::Latest,
        Some("earliest") => EventPosition::Earliest,
        Some(other) => return Err(format!("start at `earliest` or `latest`, not {other:?}").into()),
    };
    let count: Option<u64> = args.next().map(|s| s.parse()).transpose()?;

    let connection_string = std::env::var("IOTHUB_CONNECTION_STRING").map_err(
        |_| "set IOTHUB_CONNECTION_STRING (a hub policy or Event Hubs connection string)",
    )?;
    let mut options = EventHubConsumerOptions::default();
    if let Ok(path) = std::env::var("IOTHUB_CA_PEM") {
        let pem = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read IOTHUB_CA_PEM ({path}): {e}"))?;
        options = options.trusted_ca_pem(pem);
    }
    if let Ok(port) = std::env::var("IOTHUB_AMQP_PORT") {
        options = options.hub_amqp_port(port.parse()?);
    }
    if let Ok(group) = std::env::var("CONSUMER_GROUP") {
        options = options.consumer_group(group);
    }

    let consumer = EventHubConsumer::from_connection_string(&connection_string, options).await?;
    let hub = consumer.get_event_hub_properties().await?;
    eprintln!(
        "reading {} on {} ({} partitions)",
        hub.name,
        consumer.host(),
        hub.partition_ids.len()
    );
    let mut events = consumer.receive_all(start).await?;
    let mut seen = 0;
    while count.is_none_or(|c| seen < c) {
        let Some(event) = events.next_event().await else {
            break;
        };
        let event = event?;
        println!(
            "{} (partition {}, #{}): {}",
            event.device_id().unwrap_or("?"),
            event.partition_id,
            event.sequence_number,
            event.body_text()
        );
        for (name, value) in &event.application_properties {
            println!("  {name} ({}) = {value}", value.type_name());
        }
        for (name, value) in &event.annotations {
            println!("  [{name}] ({}) = {value}", value.type_name());
        }
        seen += 1;
    }
    Ok(())
}
