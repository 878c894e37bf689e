//! `iot-bench eventhubs`: reads every event of the emulator's Event Hubs-compatible endpoint
//! from the start of every partition with this project's `EventHubConsumer` (bench/eventhubs.sh
//! runs it beside the official Python and Node consumers).
//!
//! The number of events to expect is the sum over the partitions' `$management` properties
//! (last − begin + 1), taken before reading; the run ends when that many have arrived. It
//! prints events/s (from asking for the stream to the last event), the time to the first
//! event, and how many events carried the application property `prop1` (a check that the
//! reader decoded them, not a filter).

use std::path::Path;
use std::time::Instant;

use azure_iot_core::EventHubConnectionString;
use azure_iot_service::{EventHubConsumer, EventHubConsumerOptions, EventPosition};
use serde_json::json;

/// Reads all events of the endpoint that `hub_dir`'s hub.json announces; `prefetch` is each
/// partition receiver's credit.
pub(crate) async fn read_all(hub_dir: &Path, prefetch: u32) {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hub_dir.join("hub.json")).unwrap()).unwrap();
    let cs = doc["event_hubs"]["connection_string"]
        .as_str()
        .expect("hub.json announces event_hubs.connection_string");
    let ca = std::fs::read_to_string(hub_dir.join("ca.pem")).unwrap();
    let options = EventHubConsumerOptions::default()
        .trusted_ca_pem(ca)
        .prefetch(prefetch)
        .buffer(prefetch as usize);
    let consumer =
        EventHubConsumer::from_event_hub(&EventHubConnectionString::parse(cs).unwrap(), options)
            .unwrap();
    let mut expected: u64 = 0;
    for id in consumer
        .get_event_hub_properties()
        .await
        .unwrap()
        .partition_ids
    {
        let p = consumer.get_partition_properties(&id).await.unwrap();
        if !p.is_empty {
            expected += (p.last_enqueued_sequence_number - p.begin_sequence_number + 1) as u64;
        }
    }
    let started = Instant::now();
    let mut stream = consumer.receive_all(EventPosition::Earliest).await.unwrap();
    let mut first = None;
    let mut received: u64 = 0;
    let mut with_property: u64 = 0;
    while received < expected {
        let event = stream
            .next_event()
            .await
            .expect("the stream ended early")
            .unwrap();
        first.get_or_insert_with(|| started.elapsed());
        received += 1;
        with_property += u64::from(event.property("prop1").is_some());
    }
    let elapsed = started.elapsed();
    stream.close();
    println!(
        "RESULT {}",
        json!({
            "mode": "eventhubs",
            "client": "rust EventHubConsumer",
            "events": received,
            "with_prop1": with_property,
            "seconds": elapsed.as_secs_f64(),
            "events_per_sec": received as f64 / elapsed.as_secs_f64(),
            "first_event_ms": first.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        })
    );
}
