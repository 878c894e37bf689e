//! The telemetry log through the emulator: partitions configured on the builder, per-partition
//! reads, the monitor endpoint's partition fields and filter, and a data directory whose log
//! keeps its partition count across restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use azure_iot_emulator::{Emulator, EmulatorError, EmulatorHandle, EventPosition};
use azure_iot_protocol::mqtt::codec::QoS;
use azure_iot_test::{HubEndpoint, MqttClient, RestClient, device_token};
use reqwest::StatusCode;

const HOUR: Duration = Duration::from_secs(3600);

async fn start(
    dir: &std::path::Path,
    partitions: Option<u32>,
) -> Result<EmulatorHandle, EmulatorError> {
    let mut builder = Emulator::builder()
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .data_dir(dir);
    if let Some(n) = partitions {
        builder = builder.partitions(n);
    }
    builder.start().await
}

#[tokio::test]
async fn partitions_from_the_builder_serve_per_partition_reads() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start(dir.path(), Some(2)).await.unwrap();
    assert_eq!(hub.telemetry_partitions(), 2);
    let ep = HubEndpoint::of(&hub);
    let owner = RestClient::new(&ep, "iothubowner");
    let devices = ["alpha", "bravo", "charlie", "delta", "echo"];
    for d in devices {
        let key = owner.register_device(d).await;
        let token = device_token(&ep, d, None, &key, HOUR);
        let (mut device, _) = MqttClient::connect(&ep, d, &token, true, 60).await;
        for i in 0..3 {
            device
                .publish(
                    &format!("devices/{d}/messages/events/n={i}"),
                    format!("{d}-{i}"),
                    QoS::AtLeastOnce,
                )
                .await;
            device.recv().await.unwrap();
        }
    }

    // Each partition holds whole devices, numbered from 0; together they hold everything.
    let mut seen = HashSet::new();
    let mut device_partition = std::collections::HashMap::new();
    for p in 0..2 {
        let events = hub
            .telemetry_partition(p, EventPosition::Earliest, 100)
            .await
            .unwrap();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.partition, p);
            assert_eq!(e.partition_sequence_number, i as i64);
            assert_eq!(*device_partition.entry(e.device_id.clone()).or_insert(p), p);
            seen.insert(e.sequence_number);
        }
        let info = hub.telemetry_partition_info(p).await.unwrap();
        assert_eq!(info.last_enqueued_sequence_number, events.len() as i64 - 1);
        if let Some(last) = events.last() {
            assert_eq!(info.last_enqueued_offset, last.offset);
        }
    }
    assert_eq!(seen.len(), 15);
    assert!(
        hub.telemetry_partition(2, EventPosition::Earliest, 1)
            .await
            .is_err()
    );

    // The monitor endpoint: what it had, plus the partition position and typed properties.
    let service = RestClient::new(&ep, "service");
    let all = service.get("/$emulator/telemetry?after=0").await.body;
    let first = &all[0];
    assert_eq!(first["deviceId"], "alpha");
    assert_eq!(first["body"], "alpha-0");
    assert_eq!(first["properties"]["n"], "0");
    assert_eq!(first["sequenceNumber"], 1);
    assert_eq!(first["partition"], device_partition["alpha"]);
    assert_eq!(first["partitionSequenceNumber"], 0);
    assert_eq!(first["offset"], "0");
    assert_eq!(
        first["typedProperties"],
        serde_json::json!([{"name": "n", "type": "string", "value": "0"}])
    );
    let one = service.get("/$emulator/telemetry?partition=1").await.body;
    let one = one.as_array().unwrap();
    assert!(one.iter().all(|e| e["partition"] == 1));
    assert_eq!(
        one.len(),
        device_partition.values().filter(|&&p| p == 1).count() * 3
    );
    assert_eq!(
        service.get("/$emulator/telemetry?partition=2").await.status,
        StatusCode::BAD_REQUEST
    );
    hub.shutdown().await;

    // The count is the log's: unset keeps it, another one is refused with a clear message.
    let error = start(dir.path(), Some(4)).await.unwrap_err().to_string();
    assert!(error.contains("has 2 partitions"), "{error}");
    let hub = start(dir.path(), None).await.unwrap();
    assert_eq!(hub.telemetry_partitions(), 2);
    assert_eq!(hub.telemetry(0, 100).await.unwrap().len(), 15);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_new_log_has_four_partitions_and_options_are_checked() {
    let hub = azure_iot_test::emulator().await;
    assert_eq!(hub.telemetry_partitions(), 4);
    for p in 0..4 {
        let info = hub.telemetry_partition_info(p).await.unwrap();
        assert!(info.is_empty);
        assert_eq!(info.last_enqueued_sequence_number, -1);
        assert_eq!(info.last_enqueued_offset, "-1");
    }
    hub.shutdown().await;
    for builder in [
        Emulator::builder().partitions(0),
        Emulator::builder().partitions(129),
        Emulator::builder().telemetry_retention(Duration::ZERO),
        Emulator::builder().telemetry_max_bytes(0),
    ] {
        let error = builder
            .https_port(0)
            .mqtt_port(0)
            .amqp_port(0)
            .start()
            .await
            .unwrap_err();
        assert!(matches!(error, EmulatorError::Config(_)), "{error}");
    }
}
