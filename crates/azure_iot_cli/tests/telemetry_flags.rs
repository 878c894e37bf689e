//! `hub start`'s telemetry log flags: a data directory's log keeps its partition count, and
//! asking for another one is a clear one-line error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[tokio::test]
async fn another_partition_count_for_an_existing_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hub = azure_iot_emulator::Emulator::builder()
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .data_dir(dir.path())
        .partitions(2)
        .start()
        .await
        .unwrap();
    hub.shutdown().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_azure-iot"))
        .args([
            "hub",
            "start",
            "--https-port",
            "0",
            "--mqtt-port",
            "0",
            "--amqp-port",
            "0",
        ])
        .args(["--partitions", "8", "--data-dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has 2 partitions") && stderr.contains("--partitions 2"),
        "{stderr}"
    );
}

#[test]
fn retention_flags_must_be_positive() {
    for flag in [
        "--telemetry-retention-hours",
        "--telemetry-max-mb",
        "--partitions",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_azure-iot"))
            .args(["hub", "start", "--in-memory", flag, "0"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{stderr}");
    }
}

#[tokio::test]
async fn monitor_events_reads_one_partition() {
    use azure_iot_protocol::mqtt::codec::QoS;
    use azure_iot_test::{HubEndpoint, MqttClient, RestClient, device_token};

    let dir = tempfile::tempdir().unwrap();
    let hub = azure_iot_emulator::Emulator::builder()
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .data_dir(dir.path())
        .in_memory(true)
        .partitions(2)
        .start()
        .await
        .unwrap();
    let ep = HubEndpoint::of(&hub);
    let owner = RestClient::new(&ep, "iothubowner");
    for d in ["p-a", "p-b", "p-c", "p-d"] {
        let key = owner.register_device(d).await;
        let token = device_token(&ep, d, None, &key, std::time::Duration::from_secs(3600));
        let (mut device, _) = MqttClient::connect(&ep, d, &token, true, 60).await;
        device
            .publish(
                &format!("devices/{d}/messages/events/"),
                d,
                QoS::AtLeastOnce,
            )
            .await;
        device.recv().await.unwrap();
    }
    let mut total = 0;
    for p in ["0", "1"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_azure-iot"))
            .args(["hub", "monitor-events", "--from-start", "--partition", p])
            .args(["--output", "json", "--timeout", "1", "--data-dir"])
            .arg(dir.path())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(event["partition"].to_string(), p);
            total += 1;
        }
    }
    assert_eq!(total, 4);
    hub.shutdown().await;
}
