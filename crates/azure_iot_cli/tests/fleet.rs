//! `azure-iot device simulate` as a fleet simulator: the real binary against an in-process
//! emulator. Devices are created on demand (and reused on the next run), multiplexed over
//! AMQP within the per-connection limit, one connection each over MQTT, or taken from a file
//! of connection strings; every message of the payload template arrives filled in, and the
//! JSON summary counts what the hub logged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use azure_iot_emulator::EmulatorHandle;
use serde_json::Value;

/// Far more than any run here needs.
const RUN_LIMIT: Duration = Duration::from_secs(120);

mod common;
use common::hub;

/// Runs the binary, bounded by [`RUN_LIMIT`].
async fn cli(dir: &Path, args: &[&str]) -> Output {
    let run = common::command(dir, args).output();
    tokio::time::timeout(RUN_LIMIT, run)
        .await
        .expect("the command did not finish")
        .unwrap()
}

fn summary(output: &Output) -> Value {
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Messages the hub logged, per device.
async fn logged(hub: &EmulatorHandle) -> HashMap<String, Vec<Value>> {
    let mut by_device: HashMap<String, Vec<Value>> = HashMap::new();
    for entry in hub.telemetry(0, 100_000).await.unwrap() {
        let body = serde_json::from_slice(entry.message.body()).unwrap();
        by_device
            .entry(entry.device_id.clone())
            .or_default()
            .push(body);
    }
    by_device
}

const TEMPLATE: &str =
    r#"{"device":"{{device_id}}","n":{{counter}},"at":"{{timestamp}}","temp":{{random:20:30}}}"#;

/// 30 devices `car-00`..`car-29`, 10 per AMQP connection, 4 messages each of [`TEMPLATE`].
async fn run(d: &Path, transport: &str) -> Output {
    cli(
        d,
        &[
            "device",
            "simulate",
            "--devices",
            "30",
            "--device-prefix",
            "car-",
            "--transport",
            transport,
            "--devices-per-connection",
            "10",
            "--count",
            "4",
            "--in-flight",
            "2",
            "--payload",
            TEMPLATE,
            "--output",
            "json",
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_devices_multiplexed_over_amqp_send_the_template_and_are_reused_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let d = dir.path();
    let first = summary(&run(d, "amqp").await);
    assert_eq!(first["devices"], 30);
    assert_eq!(first["connected"], 30);
    assert_eq!(
        first["connections"], 3,
        "30 devices, 10 per connection: {first}"
    );
    assert_eq!(first["acknowledged"], 120);
    assert_eq!(first["failed"], 0);
    assert!(
        first["latency_ms"]["p99"].as_f64().unwrap() > 0.0,
        "{first}"
    );
    assert!(
        first["rss_bytes"]["connected"].as_u64().unwrap() > 0,
        "{first}"
    );

    let logged = logged(&hub).await;
    assert_eq!(logged.len(), 30);
    for (device, bodies) in &logged {
        assert!(device.starts_with("car-") && device.len() == 6, "{device}");
        let mut counters: Vec<u64> = bodies.iter().map(|b| b["n"].as_u64().unwrap()).collect();
        counters.sort_unstable();
        assert_eq!(counters, [0, 1, 2, 3], "{device}");
        for body in bodies {
            assert_eq!(body["device"], device.as_str());
            assert!(
                (20..=30).contains(&body["temp"].as_i64().unwrap()),
                "{body}"
            );
            assert!(body["at"].as_str().unwrap().ends_with('Z'), "{body}");
        }
    }

    // The devices exist now: a second run (over MQTT, one connection each) reads their keys.
    let second = summary(&run(d, "mqtt").await);
    assert_eq!(second["connected"], 30);
    assert_eq!(second["connections"], 30);
    assert_eq!(second["acknowledged"], 120);
    let listed = cli(d, &["device", "list"]).await;
    let devices: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        devices.as_array().unwrap().len(),
        30,
        "nothing created twice"
    );
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_of_connection_strings_is_a_fleet_and_a_bad_line_is_named_without_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let d = dir.path();
    let mut lines = vec!["# two devices of the emulator".to_owned(), String::new()];
    for id in ["alpha", "beta"] {
        assert!(
            cli(d, &["device", "create", "-d", id])
                .await
                .status
                .success()
        );
        let cs = cli(d, &["device", "connection-string", "-d", id]).await;
        lines.push(String::from_utf8(cs.stdout).unwrap().trim().to_owned());
    }
    let file = d.join("devices.txt");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let path = file.to_str().unwrap();
    let out = summary(
        &cli(
            d,
            &[
                "device",
                "simulate",
                "--connection-strings",
                path,
                "--transport",
                "amqp-ws",
                "--count",
                "3",
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(
        (out["connected"].as_u64(), out["acknowledged"].as_u64()),
        (Some(2), Some(6))
    );
    assert_eq!(
        out["connections"], 1,
        "one AMQP-WS connection carries both: {out}"
    );
    let logged = logged(&hub).await;
    assert_eq!((logged["alpha"].len(), logged["beta"].len()), (3, 3));

    // A line that is not a device connection string: its number, never its text.
    lines.push("HostName=localhost;DeviceId=gamma;SharedAccessKey=c2VjcmV0LWtleQ;Bogus".into());
    std::fs::write(&file, lines.join("\n")).unwrap();
    let bad = cli(d, &["device", "simulate", "--connection-strings", path]).await;
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8(bad.stderr).unwrap();
    assert!(err.contains("devices.txt line 5"), "{err}");
    assert!(!err.contains("c2VjcmV0LWtleQ"), "the key leaked: {err}");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_that_cannot_connect_fail_the_run_and_the_others_send() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let d = dir.path();
    let mut lines = Vec::new();
    for id in ["good", "gone"] {
        assert!(
            cli(d, &["device", "create", "-d", id])
                .await
                .status
                .success()
        );
        let cs = cli(d, &["device", "connection-string", "-d", id]).await;
        lines.push(String::from_utf8(cs.stdout).unwrap().trim().to_owned());
    }
    assert!(
        cli(d, &["device", "delete", "-d", "gone"])
            .await
            .status
            .success()
    );
    let file = d.join("devices.txt");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = cli(
        d,
        &[
            "device",
            "simulate",
            "--connection-strings",
            file.to_str().unwrap(),
            "--count",
            "5",
            "--transport",
            "amqp",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("1 of 2 devices could not connect; the first: device gone"),
        "{err}"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("1 of 2 devices connected over amqp"),
        "{text}"
    );
    assert!(text.contains("acknowledged 5, failed 0"), "{text}");
    assert_eq!(logged(&hub).await["good"].len(), 5);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_are_refused_before_anything_connects() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let d = dir.path();
    for (args, says) in [
        (
            vec!["--devices", "2", "--payload", "{{nope}}"],
            "unknown placeholder {{nope}}",
        ),
        (
            vec![
                "--devices",
                "2",
                "--transport",
                "amqp",
                "--devices-per-connection",
                "1000",
            ],
            "1 to 999",
        ),
        (
            vec!["--devices", "2", "--rate", "0"],
            "--rate must be 0.001 to 1,000,000",
        ),
    ] {
        let mut all = vec!["device", "simulate"];
        all.extend(args);
        let out = cli(d, &all).await;
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(says), "{all:?}: {err}");
    }
    let listed = cli(d, &["device", "list"]).await;
    assert_eq!(
        String::from_utf8(listed.stdout).unwrap().trim(),
        "[]",
        "nothing was created"
    );
    hub.shutdown().await;
}
