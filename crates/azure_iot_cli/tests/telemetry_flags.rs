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
