//! The `az iot`-style commands (`device`, `twin`, `query`, `method`, `c2d`, `device simulate`)
//! and `quickstart`, run as the real binary against an in-process emulator that wrote its
//! `hub.json` into a temporary data directory; and the one-line errors for a bad connection
//! string and a hub that is not running.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_device::{ClientOptions, DeviceClient, MethodResponse};
use azure_iot_emulator::EmulatorHandle;
use serde_json::{Value, json};
use tokio::process::Command;

mod common;
use common::{cli, hub, json_out, one_line_error, stdout};

async fn connect(hub: &EmulatorHandle, connection_string: &str) -> DeviceClient {
    DeviceClient::from_connection_string(
        connection_string,
        ClientOptions::default()
            .trusted_ca_pem(hub.ca_pem())
            .port(hub.mqtt_addr().port()),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn device_commands_manage_identities() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let d = dir.path();

    let created = json_out(&cli(d, &["device", "create", "-d", "cli-1"]).await);
    assert_eq!(created["deviceId"], "cli-1");
    let key = created["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let err = one_line_error(&cli(d, &["device", "create", "-d", "cli-1"]).await);
    assert!(
        err.contains("409") && err.contains("DeviceAlreadyExists"),
        "{err}"
    );
    json_out(
        &cli(
            d,
            &["device", "create", "-d", "edge-1", "--edge", "--disabled"],
        )
        .await,
    );
    let module = json_out(&cli(d, &["device", "create", "-d", "edge-1", "-m", "filter"]).await);
    assert_eq!(module["moduleId"], "filter");

    let shown = json_out(&cli(d, &["device", "show", "-d", "edge-1"]).await);
    assert_eq!(shown["status"], "disabled");
    assert_eq!(shown["capabilities"]["iotEdge"], true);
    let listed = json_out(&cli(d, &["device", "list"]).await);
    assert_eq!(listed.as_array().unwrap().len(), 2);

    let cs = stdout(&cli(d, &["device", "connection-string", "-d", "cli-1"]).await);
    assert_eq!(
        cs.trim(),
        format!("HostName=localhost;DeviceId=cli-1;SharedAccessKey={key}")
    );
    // The printed connection string works.
    let device = connect(&hub, cs.trim()).await;
    device.close().await;
    let module_cs = stdout(
        &cli(
            d,
            &[
                "device",
                "connection-string",
                "-d",
                "edge-1",
                "-m",
                "filter",
            ],
        )
        .await,
    );
    assert!(module_cs.contains("DeviceId=edge-1;ModuleId=filter;SharedAccessKey="));

    let deleted = cli(d, &["device", "delete", "-d", "cli-1"]).await;
    assert!(deleted.status.success());
    let err = one_line_error(&cli(d, &["device", "show", "-d", "cli-1"]).await);
    assert!(err.contains("404"), "{err}");
    let err = one_line_error(&cli(d, &["device", "show", "-d", "bad/id"]).await);
    assert!(err.contains("device id"), "{err}");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twin_and_query_commands() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let d = dir.path();
    for id in ["t1", "t2", "t3"] {
        stdout(&cli(d, &["device", "create", "-d", id]).await);
    }
    let twin = json_out(
        &cli(
            d,
            &[
                "twin",
                "update",
                "-d",
                "t2",
                "--desired",
                r#"{"interval":5}"#,
                "--tags",
                r#"{"floor":3}"#,
            ],
        )
        .await,
    );
    assert_eq!(twin["properties"]["desired"]["interval"], 5);
    let shown = json_out(&cli(d, &["twin", "show", "-d", "t2"]).await);
    assert_eq!(shown["tags"]["floor"], 3);
    let err = one_line_error(&cli(d, &["twin", "update", "-d", "t2", "--desired", "[1]"]).await);
    assert!(err.contains("--desired"), "{err}");
    let err = one_line_error(&cli(d, &["twin", "update", "-d", "t2", "--desired", "{nope"]).await);
    assert!(err.contains("not valid JSON"), "{err}");

    let lines = stdout(
        &cli(
            d,
            &[
                "query",
                "-q",
                "SELECT deviceId FROM devices",
                "--page-size",
                "2",
            ],
        )
        .await,
    );
    let mut ids: Vec<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["deviceId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["t1", "t2", "t3"]);
    let one = stdout(
        &cli(
            d,
            &["query", "-q", "SELECT * FROM devices WHERE tags.floor = 3"],
        )
        .await,
    );
    assert_eq!(one.lines().count(), 1);
    let top = stdout(&cli(d, &["query", "-q", "SELECT * FROM devices", "--top", "2"]).await);
    assert_eq!(top.lines().count(), 2);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn method_c2d_and_simulate_reach_a_connected_device() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let d = dir.path();
    stdout(&cli(d, &["device", "create", "-d", "dev"]).await);
    let err = one_line_error(&cli(d, &["method", "invoke", "-d", "dev", "-n", "ping"]).await);
    assert!(err.contains("DeviceNotOnline"), "{err}");

    let cs = stdout(&cli(d, &["device", "connection-string", "-d", "dev"]).await);
    let device = connect(&hub, cs.trim()).await;
    let mut requests = device.method_requests().await.unwrap();
    let answering = {
        let device = device.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                device
                    .respond_to_method(MethodResponse::new(
                        request.request_id,
                        200,
                        json!({"pong": request.payload}),
                    ))
                    .await
                    .unwrap();
            }
        })
    };
    let answer = json_out(
        &cli(
            d,
            &[
                "method",
                "invoke",
                "-d",
                "dev",
                "-n",
                "ping",
                "--payload",
                r#"{"x":1}"#,
                "--timeout",
                "10",
            ],
        )
        .await,
    );
    assert_eq!(
        answer,
        json!({"status": 200, "payload": {"pong": {"x": 1}}})
    );

    // Feedback for another message is already waiting: --wait-feedback reads past it.
    stdout(&cli(d, &["device", "create", "-d", "other"]).await);
    let service = azure_iot_service::ServiceClient::from_connection_string(
        hub.connection_string("iothubowner").unwrap(),
        azure_iot_service::ServiceClientOptions::default()
            .trusted_ca_pem(hub.ca_pem())
            .https_port(hub.https_addr().port())
            .amqp_port(hub.amqp_addr().port()),
    )
    .unwrap();
    let messaging = service.messaging().await.unwrap();
    messaging
        .send(
            "other",
            azure_iot_service::CloudToDeviceMessage::new("never read")
                .message_id("foreign-1")
                .feedback(azure_iot_service::FeedbackMode::Negative),
        )
        .await
        .unwrap();
    service.purge_c2d_queue("other").await.unwrap();
    messaging.close().await.unwrap();

    let mut inbox = device.cloud_to_device_messages().await.unwrap();
    let sent = cli(
        d,
        &[
            "c2d",
            "send",
            "-d",
            "dev",
            "--data",
            "hello",
            "--message-id",
            "cli-m1",
            "-p",
            "color=blue",
            "--ack",
            "full",
            "--wait-feedback",
            "10",
        ],
    );
    let (sent, received) = tokio::join!(sent, async {
        tokio::time::timeout(Duration::from_secs(10), inbox.recv())
            .await
            .unwrap()
            .unwrap()
    });
    assert_eq!(received.body().as_ref(), b"hello");
    assert_eq!(received.property("color"), Some("blue"));
    let feedback = json_out(&sent);
    assert_eq!(feedback["originalMessageId"], "cli-m1");
    let notes = String::from_utf8_lossy(&sent.stderr);
    assert!(
        notes.contains("foreign-1"),
        "the other record is shown: {notes}"
    );
    assert_eq!(feedback["statusCode"], "Success");
    // A usage error is clap's: exit status 2, the problem on the first line.
    let usage = cli(
        d,
        &["c2d", "send", "-d", "dev", "--data", "x", "-p", "novalue"],
    )
    .await;
    assert_eq!(usage.status.code(), Some(2));
    let first = String::from_utf8(usage.stderr).unwrap();
    let first = first.lines().next().unwrap();
    assert!(
        first.starts_with("error:") && first.contains("name=value"),
        "{first}"
    );

    // One connection per identity: the device above leaves before `simulate` connects as it.
    device.close().await;
    answering.await.unwrap();
    let summary = stdout(
        &cli(
            d,
            &[
                "device",
                "simulate",
                "-d",
                "dev",
                "--count",
                "40",
                "--in-flight",
                "8",
                "--size",
                "64",
            ],
        )
        .await,
    );
    assert!(summary.contains("acknowledged 40, failed 0"), "{summary}");
    // With a device connection string, no service credentials are needed: the emulator's
    // port and CA come from its hub.json because the host names it.
    let direct = Command::new(env!("CARGO_BIN_EXE_azure-iot"))
        .args(["device", "simulate", "-d", "dev", "--count", "5"])
        .env("IOTHUB_DEVICE_CONNECTION_STRING", cs.trim())
        .env(
            "IOTHUB_CONNECTION_STRING",
            "HostName=elsewhere;SharedAccessKeyName=p;SharedAccessKey=bad",
        )
        .env("AZURE_IOT_HUB_DATA_DIR", d)
        .output()
        .await
        .unwrap();
    assert!(stdout(&direct).contains("acknowledged 5, failed 0"));
    let logged = hub.telemetry(0, 1000).await.unwrap();
    assert_eq!(logged.iter().filter(|e| e.device_id == "dev").count(), 45);
    assert_eq!(
        logged
            .iter()
            .filter(|e| e.message.body().len() == 64)
            .count(),
        40,
        "--size 64 for the first run, the default 100 for the second"
    );

    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_connection_strings_and_missing_hubs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = one_line_error(&cli(d, &["device", "list"]).await);
    assert!(
        err.contains("hub start") && err.contains("--connection-string"),
        "{err}"
    );
    let err = one_line_error(
        &cli(
            d,
            &[
                "device",
                "list",
                "--connection-string",
                "HostName=h;SharedAccessKey=c2VjcmV0",
            ],
        )
        .await,
    );
    assert!(err.contains("connection-string"), "{err}");
    let secret = "HostName=h;SharedAccessKeyName=p;SharedAccessKey=not*base64";
    let err = one_line_error(&cli(d, &["device", "list", "--connection-string", secret]).await);
    assert!(!err.contains("not*base64"), "the key is not echoed: {err}");

    // A hub.json whose emulator is gone: a transport error, quickly.
    let hub = hub(d).await;
    hub.shutdown().await;
    let err = one_line_error(&cli(d, &["device", "list"]).await);
    assert!(err.contains("could not connect"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_walks_through_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = stdout(&cli(dir.path(), &["quickstart"]).await);
    assert!(out.contains("all 12 steps passed"), "{out}");
    for step in [
        "enrollment group (DPS, group key)",
        "derive the device key",
        "register through DPS",
        "quickstart-device on localhost",
        "telemetry",
        "direct method",
        "desired property",
        "feedback",
        "over AMQP",
        "feedback Rejected",
        "the back end was notified",
    ] {
        assert!(out.contains(step), "{out}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "quickstart writes nothing"
    );
}
