//! `azure-iot job ...` as the real binary against an in-process emulator (its `hub.json` in a
//! temporary data directory), with this project's device client answering the method.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use azure_iot_device::{ClientOptions, DeviceClient, MethodResponse};
use serde_json::{Value, json};

mod common;
use common::{cli, hub, json_out, one_line_error, stdout};

#[tokio::test(flavor = "multi_thread")]
async fn job_commands_schedule_show_list_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let d = dir.path();
    stdout(&cli(d, &["device", "create", "-d", "jd1"]).await);
    stdout(&cli(d, &["device", "create", "-d", "jd2"]).await);
    let cs = stdout(&cli(d, &["device", "connection-string", "-d", "jd1"]).await);
    let device = DeviceClient::from_connection_string(
        cs.trim(),
        ClientOptions::default()
            .trusted_ca_pem(hub.ca_pem())
            .port(hub.mqtt_addr().port()),
    )
    .await
    .unwrap();
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

    let done = json_out(
        &cli(
            d,
            &[
                "job",
                "schedule-method",
                "-j",
                "cli-m",
                "-q",
                "deviceId IN ['jd1', 'jd2']",
                "-n",
                "ping",
                "--payload",
                r#"{"x":1}"#,
                "--timeout",
                "10",
                "--wait",
            ],
        )
        .await,
    );
    assert_eq!(done["status"], "completed");
    assert_eq!(done["deviceJobStatistics"]["succeededCount"], 1);
    assert_eq!(done["deviceJobStatistics"]["failedCount"], 1);

    let shown = stdout(&cli(d, &["job", "show", "-j", "cli-m", "--devices"]).await);
    let rows: Vec<Value> = shown
        .lines()
        .filter(|l| l.starts_with('{') && l.contains("\"deviceId\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let jd1 = rows.iter().find(|r| r["deviceId"] == "jd1").unwrap();
    assert_eq!(
        jd1["outcome"]["deviceMethodResponse"],
        json!({"status": 200, "payload": {"pong": {"x": 1}}})
    );
    let jd2 = rows.iter().find(|r| r["deviceId"] == "jd2").unwrap();
    assert_eq!(jd2["error"]["code"], "DeviceNotOnline");

    let scheduled = json_out(
        &cli(
            d,
            &[
                "job",
                "schedule-twin",
                "-j",
                "cli-t",
                "-q",
                "deviceId = 'jd2'",
                "--desired",
                r#"{"interval":9}"#,
                "--start-time",
                "2099-01-01T00:00:00Z",
            ],
        )
        .await,
    );
    assert_eq!(scheduled["status"], "scheduled");
    assert_eq!(scheduled["type"], "scheduleUpdateTwin");
    let listed = stdout(&cli(d, &["job", "list", "--job-status", "scheduled"]).await);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains("cli-t"));
    let cancelled = json_out(&cli(d, &["job", "cancel", "-j", "cli-t"]).await);
    assert_eq!(cancelled["status"], "cancelled");
    let all = stdout(&cli(d, &["job", "list"]).await);
    assert_eq!(all.lines().count(), 2, "{all}");

    let err = one_line_error(&cli(d, &["job", "show", "-j", "nope"]).await);
    assert!(err.contains("404") && err.contains("JobNotFound"), "{err}");
    let err = one_line_error(
        &cli(
            d,
            &[
                "job",
                "schedule-twin",
                "-j",
                "x",
                "-q",
                "deviceId = = 1",
                "--tags",
                "{\"a\":1}",
            ],
        )
        .await,
    );
    assert!(err.contains("400"), "{err}");
    answering.abort();
    hub.shutdown().await;
}
