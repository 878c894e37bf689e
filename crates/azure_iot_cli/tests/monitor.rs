//! `azure-iot hub monitor-events` and `monitor-feedback` against a running `azure-iot hub start`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use azure_iot_protocol::mqtt::codec::QoS;
use azure_iot_test::{HubEndpoint, MqttClient, RestClient, device_token};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

async fn start(dir: &Path) -> (tokio::process::Child, HubEndpoint) {
    let child = Command::new(env!("CARGO_BIN_EXE_azure-iot"))
        .args([
            "hub",
            "start",
            "--in-memory",
            "--https-port",
            "0",
            "--mqtt-port",
            "0",
            "--amqp-port",
            "0",
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("hub.json").exists() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, HubEndpoint::from_data_dir(dir))
}

fn cli(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_azure-iot"));
    command
        .args(["hub"])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[tokio::test]
async fn monitor_events_prints_what_devices_send() {
    let dir = tempfile::tempdir().unwrap();
    let (_emulator, hub) = start(dir.path()).await;
    let api = RestClient::new(&hub, "iothubowner");
    let mut keys = Vec::new();
    for device in ["m1", "m2"] {
        let r = api.put(&format!("/devices/{device}"), json!({})).await;
        keys.push(
            r.body["authentication"]["symmetricKey"]["primaryKey"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let (mut d1, _) = MqttClient::connect(
        &hub,
        "m1",
        &device_token(&hub, "m1", None, &keys[0], Duration::from_secs(600)),
        true,
        60,
    )
    .await;
    let (mut d2, _) = MqttClient::connect(
        &hub,
        "m2",
        &device_token(&hub, "m2", None, &keys[1], Duration::from_secs(600)),
        true,
        60,
    )
    .await;
    d1.publish(
        "devices/m1/messages/events/%24.mid=first&color=red",
        "hello",
        QoS::AtLeastOnce,
    )
    .await;
    d1.recv().await;
    d2.publish("devices/m2/messages/events/", "from m2", QoS::AtLeastOnce)
        .await;
    d2.recv().await;

    // From the start, one device, JSON lines, stop after one message.
    let out = cli(
        dir.path(),
        &[
            "monitor-events",
            "--from-start",
            "--device-id",
            "m1",
            "--output",
            "json",
            "--count",
            "1",
        ],
    )
    .output()
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["deviceId"], "m1");
    assert_eq!(lines[0]["body"], "hello");
    assert_eq!(lines[0]["properties"]["color"], "red");
    assert_eq!(lines[0]["systemProperties"]["messageId"], "first");

    // From now (the default): only what arrives after it started, as text.
    let mut watcher = cli(
        dir.path(),
        &["monitor-events", "--count", "1", "--timeout", "30"],
    )
    .spawn()
    .unwrap();
    // It announces itself once it has found where "now" is.
    let mut stderr = tokio::io::BufReader::new(watcher.stderr.take().unwrap()).lines();
    while let Some(line) = stderr.next_line().await.unwrap() {
        if line.starts_with("Monitoring telemetry") {
            break;
        }
    }
    d2.publish("devices/m2/messages/events/", "live one", QoS::AtLeastOnce)
        .await;
    d2.recv().await;
    let out = watcher.wait_with_output().await.unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(
        text.contains("from m2") && text.contains("body: live one"),
        "{text}"
    );
    assert!(
        !text.contains("hello"),
        "history is not replayed without --from-start: {text}"
    );

    // A timeout with nothing to show ends quietly.
    let out = cli(
        dir.path(),
        &["monitor-events", "--timeout", "1", "--output", "json"],
    )
    .output()
    .await
    .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let out = cli(dir.path(), &["monitor-feedback", "--timeout", "1"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn monitor_without_an_emulator_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(dir.path(), &["monitor-events", "--timeout", "1"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hub.json") && stderr.contains("azure-iot hub start"),
        "{stderr}"
    );
}

#[tokio::test]
async fn files_list_and_download_what_devices_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let (_emulator, hub) = start(dir.path()).await;
    let api = RestClient::new(&hub, "iothubowner");
    let key = api.register_device("up1").await;
    let device = azure_iot_test::DeviceHttp::new(&hub, "up1", None, &key);

    let out = cli(dir.path(), &["files", "list"]).output().await.unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no uploaded files"));

    device
        .upload_file(&hub, "up1", "logs/a.txt", b"uploaded bytes")
        .await;
    let out = cli(dir.path(), &["files", "list", "--output", "json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["name"], "up1/logs/a.txt");
    assert_eq!(listed["size"], 14);

    let target = dir.path().join("downloaded.txt");
    let target_arg = target.to_str().unwrap();
    let download = [
        "files",
        "download",
        "--name",
        "up1/logs/a.txt",
        "--file",
        target_arg,
    ];
    let out = cli(dir.path(), &download).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"uploaded bytes");
    // An existing file is not overwritten without --force; an unknown name says so.
    let out = cli(dir.path(), &download).output().await.unwrap();
    assert!(!out.status.success());
    let missing = [
        "files", "download", "--name", "up1/none", "--file", target_arg, "--force",
    ];
    let out = cli(dir.path(), &missing).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    assert_eq!(std::fs::read(&target).unwrap(), b"uploaded bytes");

    // The upload's notification, read over AMQP and completed.
    let out = cli(
        dir.path(),
        &[
            "monitor-file-notifications",
            "--count",
            "1",
            "--timeout",
            "20",
            "--output",
            "json",
        ],
    )
    .output()
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(n["blobName"], "up1/logs/a.txt");
    assert_eq!(n["blobSizeInBytes"], 14);
    // Completed: nothing more within a second.
    let out = cli(
        dir.path(),
        &["monitor-file-notifications", "--timeout", "1"],
    )
    .output()
    .await
    .unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `monitor-events` reads the Event Hubs-compatible endpoint: through the hub's connection
/// string (redirect), the endpoint's own string, from a sequence number, one partition, with
/// properties and annotations shown; the emulator's HTTPS log stays as `--emulator-api`.
#[tokio::test]
async fn monitor_events_reads_the_event_hubs_endpoint_in_every_way() {
    let dir = tempfile::tempdir().unwrap();
    let (_emulator, hub) = start(dir.path()).await;
    let api = RestClient::new(&hub, "iothubowner");
    let key = api.register_device("eh1").await;
    let (mut d, _) = MqttClient::connect(
        &hub,
        "eh1",
        &device_token(&hub, "eh1", None, &key, Duration::from_secs(600)),
        true,
        60,
    )
    .await;
    for n in 0..3 {
        d.publish(
            &format!("devices/eh1/messages/events/%24.mid=m{n}&color=red"),
            format!("reading {n}"),
            QoS::AtLeastOnce,
        )
        .await;
        d.recv().await;
    }
    let json_lines = |out: std::process::Output| -> Vec<Value> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("hub.json")).unwrap())
            .unwrap();
    let hub_cs = doc["connection_strings"]["service"].as_str().unwrap();
    let eh_cs = doc["event_hubs"]["connection_string"].as_str().unwrap();

    // The hub's own connection string: the reader follows the redirect.
    let all = json_lines(
        cli(
            dir.path(),
            &[
                "monitor-events",
                "--connection-string",
                hub_cs,
                "--from-start",
                "--output",
                "json",
                "--count",
                "3",
                "--timeout",
                "20",
            ],
        )
        .output()
        .await
        .unwrap(),
    );
    let mids: Vec<&str> = all
        .iter()
        .map(|e| e["systemProperties"]["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(mids, ["m0", "m1", "m2"]);
    assert_eq!(all[0]["properties"]["color"], "red");
    assert_eq!(all[0]["messageSource"], "Telemetry");
    assert_eq!(all[0]["annotations"]["iothub-connection-device-id"], "eh1");
    assert_eq!(
        all[0]["typedProperties"][0],
        json!({"name": "color", "type": "string", "value": "red"})
    );
    let partition = all[0]["partition"].to_string();
    let first = all[0]["sequenceNumber"].as_i64().unwrap();

    // The endpoint's string, one partition, after the first event's sequence number.
    let after = json_lines(
        cli(
            dir.path(),
            &[
                "monitor-events",
                "--connection-string",
                eh_cs,
                "--partition",
                &partition,
                "--start-sequence-number",
                &first.to_string(),
                "--cg",
                "$Default",
                "--output",
                "json",
                "--count",
                "2",
                "--timeout",
                "20",
            ],
        )
        .output()
        .await
        .unwrap(),
    );
    assert_eq!(after.len(), 2);
    assert_eq!(after[0]["systemProperties"]["messageId"], "m1");

    // Text with every kind of property; an unknown partition and consumer group fail.
    let out = cli(
        dir.path(),
        &[
            "monitor-events",
            "--from-start",
            "--count",
            "1",
            "--timeout",
            "20",
            "-p",
            "all",
        ],
    )
    .output()
    .await
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for part in [
        "from eh1",
        "body: reading 0",
        "application properties:",
        "color (string): red",
        "system properties:",
        "messageId: m0",
        "annotations:",
        "x-opt-sequence-number (long)",
    ] {
        assert!(text.contains(part), "{part} missing from {text}");
    }
    for bad in [["--partition", "99"], ["--consumer-group", "nobody"]] {
        let out = cli(
            dir.path(),
            &[
                "monitor-events",
                "--from-start",
                "--timeout",
                "20",
                bad[0],
                bad[1],
            ],
        )
        .output()
        .await
        .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("amqp:not-found"), "{stderr}");
    }

    // The emulator's HTTPS log, as before.
    let legacy = json_lines(
        cli(
            dir.path(),
            &[
                "monitor-events",
                "--emulator-api",
                "--from-start",
                "--output",
                "json",
                "--count",
                "1",
            ],
        )
        .output()
        .await
        .unwrap(),
    );
    assert_eq!(legacy[0]["body"], "reading 0");
}
