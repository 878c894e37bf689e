//! `azure-iot configuration create|show|list|delete` as the real binary against an in-process
//! emulator: the configuration reaches the targeted twin, metrics show, errors are one line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

mod common;
use common::{cli, hub, json_out, one_line_error, stdout};

#[tokio::test(flavor = "multi_thread")]
async fn configuration_commands_create_show_list_delete() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let d = dir.path();
    json_out(&cli(d, &["device", "create", "-d", "north-1"]).await);
    json_out(
        &cli(
            d,
            &[
                "twin",
                "update",
                "-d",
                "north-1",
                "--tags",
                r#"{"site":"north"}"#,
            ],
        )
        .await,
    );

    // Content from a file in `az`'s wrapped form, metrics inline.
    let content = d.join("content.json");
    std::fs::write(
        &content,
        json!({"content": {"deviceContent": {"properties.desired.interval": 30}}}).to_string(),
    )
    .unwrap();
    let created = json_out(
        &cli(
            d,
            &[
                "configuration",
                "create",
                "-c",
                "north",
                "--content",
                content.to_str().unwrap(),
                "--target-condition",
                "tags.site='north'",
                "--priority",
                "5",
                "--metrics",
                r#"{"queries": {"all": "SELECT deviceId FROM devices"}}"#,
                "--labels",
                r#"{"owner": "ops"}"#,
            ],
        )
        .await,
    );
    assert_eq!(created["id"], "north");
    assert_eq!(created["priority"], 5);
    assert_eq!(created["labels"]["owner"], "ops");
    let twin = json_out(&cli(d, &["twin", "show", "-d", "north-1"]).await);
    assert_eq!(twin["properties"]["desired"]["interval"], 30);

    let shown = json_out(&cli(d, &["configuration", "show", "-c", "north"]).await);
    assert_eq!(shown["systemMetrics"]["results"]["targetedCount"], 1);
    assert_eq!(shown["systemMetrics"]["results"]["appliedCount"], 1);
    assert_eq!(shown["metrics"]["results"]["all"], 1);
    let listed = json_out(&cli(d, &["configuration", "list"]).await);
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let err = one_line_error(
        &cli(
            d,
            &[
                "configuration",
                "create",
                "-c",
                "north",
                "--content",
                r#"{"deviceContent": {"properties.desired.x": 1}}"#,
                "--target-condition",
                "*",
            ],
        )
        .await,
    );
    assert!(
        err.contains("409") && err.contains("ConfigurationAlreadyExists"),
        "{err}"
    );
    let err = one_line_error(
        &cli(
            d,
            &[
                "configuration",
                "create",
                "-c",
                "bad",
                "--content",
                r#"{"deviceContent": {"properties.reported.x": 1}}"#,
                "--target-condition",
                "*",
            ],
        )
        .await,
    );
    assert!(err.contains("properties.desired"), "{err}");
    let err = one_line_error(
        &cli(
            d,
            &["configuration", "delete", "-c", "north", "--etag", "stale"],
        )
        .await,
    );
    assert!(err.contains("412"), "{err}");

    stdout(&cli(d, &["configuration", "delete", "-c", "north"]).await);
    let twin = json_out(&cli(d, &["twin", "show", "-d", "north-1"]).await);
    assert!(twin["properties"]["desired"].get("interval").is_none());
    let err = one_line_error(&cli(d, &["configuration", "show", "-c", "north"]).await);
    assert!(
        err.contains("404") && err.contains("ConfigurationNotFound"),
        "{err}"
    );
    hub.shutdown().await;
}
