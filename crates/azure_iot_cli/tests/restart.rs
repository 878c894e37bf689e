//! `azure-iot hub start` as a user runs it: a real process, files in the data directory, and
//! state that survives `kill -9` — registry, twins, policies, and every acknowledged message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use azure_iot_protocol::mqtt::codec::{ConnectReturnCode, Packet, QoS};
use azure_iot_test::{HubEndpoint, MqttClient, RestClient, device_token};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Starts the emulator on free ports and waits until `hub.json` describes it.
async fn start(dir: &Path, extra: &[&str]) -> (Child, HubEndpoint) {
    let _ = std::fs::remove_file(dir.join("hub.json"));
    let child = Command::new(env!("CARGO_BIN_EXE_azure-iot"))
        .args([
            "hub",
            "start",
            "--https-port",
            "0",
            "--mqtt-port",
            "0",
            "--amqp-port",
            "0",
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("azure-iot starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("hub.json"))
            && serde_json::from_str::<Value>(&text).is_ok()
        {
            return (child, HubEndpoint::from_data_dir(dir));
        }
        assert!(Instant::now() < deadline, "hub.json did not appear");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn kill_9(mut child: Child) {
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test]
async fn state_survives_kill_9_and_files_keep_their_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (first, hub) = start(dir.path(), &[]).await;

    // The contract other tools rely on.
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("hub.json")).unwrap())
            .unwrap();
    assert_eq!(doc["hostname"], "localhost");
    assert!(doc["ports"]["https"].is_u64() && doc["ports"]["mqtt"].is_u64());
    for policy in [
        "iothubowner",
        "service",
        "registryRead",
        "registryReadWrite",
        "device",
    ] {
        assert!(
            hub.connection_string(policy)
                .starts_with("HostName=localhost;SharedAccessKeyName="),
            "{policy}"
        );
    }
    assert!(hub.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let api = RestClient::new(&hub, "iothubowner");
    let device = api.put("/devices/keeper", json!({})).await;
    assert_eq!(device.status, StatusCode::OK);
    api.put("/devices/keeper/modules/m", json!({})).await;
    let patched = api
        .request(
            Method::PATCH,
            "/twins/keeper",
            Some(json!({"tags": {"t": 1}, "properties": {"desired": {"d": 2}}})),
            &[],
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    kill_9(first).await;

    let (second, hub_again) = start(dir.path(), &[]).await;
    assert_eq!(
        hub_again.connection_strings, hub.connection_strings,
        "policies and their keys survive"
    );
    assert_eq!(hub_again.ca_pem, hub.ca_pem, "the CA is reused");
    let api = RestClient::new(&hub_again, "iothubowner");
    let again = api.get("/devices/keeper").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.body["authentication"], device.body["authentication"],
        "keys survive"
    );
    assert_eq!(again.body["etag"], device.body["etag"]);
    let twin = api.get("/twins/keeper").await.body;
    assert_eq!(twin["tags"], json!({"t": 1}));
    assert_eq!(twin["properties"]["desired"]["d"], 2);
    assert_eq!(twin["properties"]["desired"]["$version"], 2);
    assert_eq!(
        api.get("/devices/keeper/modules/m").await.status,
        StatusCode::OK
    );
    kill_9(second).await;
}

/// Publishes telemetry as fast as the device can, kills the emulator with SIGKILL in the middle
/// of a burst, and checks that every message the emulator acknowledged is in its log.
#[tokio::test]
async fn every_acknowledged_message_survives_kill_9_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (emulator, hub) = start(dir.path(), &[]).await;
    let api = RestClient::new(&hub, "iothubowner");
    let key = api.put("/devices/streamer", json!({})).await.body["authentication"]["symmetricKey"]
        ["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = device_token(&hub, "streamer", None, &key, Duration::from_secs(3600));
    let (mut device, ack) = MqttClient::connect(&hub, "streamer", &token, false, 60).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);

    // pkid -> body of every message sent; bodies the emulator acknowledged.
    let mut bodies = std::collections::HashMap::new();
    let mut acked = HashSet::new();
    let mut sent = 0u32;
    // Five bursts of 100, each fully acknowledged, then a burst of 300 cut short by SIGKILL.
    for burst in [100, 100, 100, 100, 100, 300] {
        for _ in 0..burst {
            sent += 1;
            let body = format!("message-{sent}");
            let pkid = device
                .publish(
                    "devices/streamer/messages/events/",
                    body.clone(),
                    QoS::AtLeastOnce,
                )
                .await;
            bodies.insert(pkid, body);
        }
        if burst == 300 {
            break;
        }
        while acked.len() < bodies.len() {
            match device.recv().await {
                Some(Packet::PubAck(a)) => {
                    acked.insert(bodies[&a.pkid].clone());
                }
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }
    kill_9(emulator).await;
    while let Some(packet) = device.recv().await {
        if let Packet::PubAck(a) = packet {
            acked.insert(bodies[&a.pkid].clone());
        }
    }
    assert!(acked.len() >= 500);

    // Restart: the emulator recovers its log; every acknowledged message is in it.
    let (again, _) = start(dir.path(), &[]).await;
    let db = rusqlite::Connection::open(dir.path().join("telemetry.db")).unwrap();
    let logged: HashSet<String> = db
        .prepare("SELECT body FROM telemetry WHERE device_id = 'streamer'")
        .unwrap()
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|b| String::from_utf8(b.unwrap()).unwrap())
        .collect();
    let lost: Vec<_> = acked.difference(&logged).collect();
    assert!(lost.is_empty(), "acknowledged but not logged: {lost:?}");
    println!("{} acknowledged, {} logged", acked.len(), logged.len());
    kill_9(again).await;
}

#[tokio::test]
async fn in_memory_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (child, _) = start(dir.path(), &["--in-memory"]).await;
    kill_9(child).await;
    assert!(
        !dir.path().join("hub.db").exists(),
        "no database file in memory mode"
    );
    assert!(!dir.path().join("telemetry.db").exists());
    assert!(dir.path().join("ca.pem").exists());
}

#[test]
fn bad_flags_are_clear_errors() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_azure-iot"))
        .args([
            "hub",
            "start",
            "--hostname",
            "bad host",
            "--https-port",
            "0",
            "--mqtt-port",
            "0",
            "--amqp-port",
            "0",
            "--in-memory",
            "--data-dir",
        ])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a valid host name"), "{stderr}");
}
