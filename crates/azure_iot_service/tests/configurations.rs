//! Configurations through the service client against the in-process emulator over real TLS:
//! this project's device client receives the configuration's desired patch; ETags, metrics,
//! test queries, edge content, and input refused before sending.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use azure_iot_service::{
    Configuration, ConfigurationContent, ConfigurationQueriesTestInput, Device, ErrorKind, IfMatch,
    TwinPatch,
};
use common::{WAIT, connect_device, service};
use serde_json::{Map, json};

fn device_configuration(
    id: &str,
    condition: &str,
    priority: i32,
    key: &str,
    value: serde_json::Value,
) -> Configuration {
    let mut config = Configuration::new(id, condition, priority);
    config.content.device_content = Some(Map::from_iter([(key.to_owned(), value)]));
    config
}

#[tokio::test]
async fn a_configuration_reaches_the_device_client_and_follows_priority() {
    let hub = azure_iot_test::emulator().await;
    let api = service(&hub, "iothubowner");
    let device = api.create_device(&Device::new("sensor-1")).await.unwrap();
    api.update_twin(
        "sensor-1",
        &TwinPatch::new().tags(json!({"site": "north"})).unwrap(),
        IfMatch::Any,
    )
    .await
    .unwrap();
    let client = connect_device(&hub, &device).await;
    let mut patches = client.desired_property_patches().await.unwrap();

    let mut base = device_configuration(
        "base",
        "tags.site = 'north'",
        1,
        "properties.desired.interval",
        json!(60),
    );
    base.metrics.queries.insert(
        "reporting".into(),
        "SELECT deviceId FROM devices WHERE properties.reported.interval = 60".into(),
    );
    let created = api.create_configuration(&base).await.unwrap();
    assert!(created.etag.is_some());
    assert_eq!(created.system_metrics.results["targetedCount"], 1);
    let pushed = tokio::time::timeout(WAIT, patches.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pushed.patch["interval"], 60);

    // The device reports the value: the custom metric counts it.
    client
        .update_reported_properties(&json!({"interval": 60}))
        .await
        .unwrap();
    let read = api.get_configuration("base").await.unwrap();
    assert_eq!(read.metrics.results["reporting"], 1);
    assert_eq!(read.system_metrics.results["appliedCount"], 1);

    // A higher priority configuration takes the same path.
    api.create_configuration(&device_configuration(
        "urgent",
        "*",
        9,
        "properties.desired.interval",
        json!(5),
    ))
    .await
    .unwrap();
    let pushed = tokio::time::timeout(WAIT, patches.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pushed.patch["interval"], 5);
    assert_eq!(
        api.get_configuration("base")
            .await
            .unwrap()
            .system_metrics
            .results["appliedCount"],
        0
    );
    api.delete_configuration("urgent", IfMatch::Any)
        .await
        .unwrap();
    let pushed = tokio::time::timeout(WAIT, patches.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pushed.patch["interval"], 60);

    let twin = api.get_twin("sensor-1").await.unwrap();
    assert_eq!(twin.properties.desired.get("interval"), Some(&json!(60)));
    hub.shutdown().await;
}

#[tokio::test]
async fn etags_listing_and_refusals() {
    let hub = azure_iot_test::emulator().await;
    let api = service(&hub, "iothubowner");
    let config = device_configuration("c1", "tags.a = 'b'", 1, "properties.desired.x", json!(1));
    let created = api.create_configuration(&config).await.unwrap();
    let again = api.create_configuration(&config).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists);

    let mut update = created.clone();
    update.priority = 4;
    let stale = api
        .update_configuration(&update, IfMatch::ETag("bm9wZQ==".into()))
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::PreconditionFailed);
    let updated = api
        .update_configuration(&update, IfMatch::etag_or_any(created.etag.as_deref()))
        .await
        .unwrap();
    assert_eq!(updated.priority, 4);
    assert_ne!(updated.etag, created.etag);
    let mut content_change = updated.clone();
    content_change.content.device_content = Some(Map::from_iter([(
        "properties.desired.x".to_owned(),
        json!(2),
    )]));
    let refused = api
        .update_configuration(&content_change, IfMatch::Any)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::BadRequest);

    let listed = api.list_configurations(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "c1");

    let tested = api
        .test_configuration_queries(&ConfigurationQueriesTestInput {
            target_condition: "tags.a = ".into(),
            custom_metric_queries: [("ok".to_owned(), "SELECT deviceId FROM devices".to_owned())]
                .into(),
        })
        .await
        .unwrap();
    assert!(!tested.target_condition_error.is_empty());
    assert!(tested.custom_metric_query_errors.is_empty());

    // Refused before sending.
    for bad in [
        device_configuration("Upper", "*", 1, "properties.desired.x", json!(1)),
        device_configuration("c2", "*", 1, "properties.reported.x", json!(1)),
        Configuration::new("c3", "*", 1),
    ] {
        let e = api.create_configuration(&bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        assert!(e.status().is_none());
    }
    // Refused by the hub: a target condition that does not parse.
    let e = api
        .create_configuration(&device_configuration(
            "c4",
            "tags.a = = 1",
            1,
            "properties.desired.x",
            json!(1),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadRequest);
    let missing = api.get_configuration("nope").await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert_eq!(missing.error_code(), Some("ConfigurationNotFound"));

    api.delete_configuration("c1", IfMatch::etag_or_any(updated.etag.as_deref()))
        .await
        .unwrap();
    assert!(api.list_configurations(10).await.unwrap().is_empty());
    hub.shutdown().await;
}

#[tokio::test]
async fn edge_content_is_applied_to_a_device() {
    let hub = azure_iot_test::emulator().await;
    let api = service(&hub, "iothubowner");
    api.create_device(&Device::new("edge-1")).await.unwrap();
    let content: ConfigurationContent = serde_json::from_value(json!({"modulesContent": {
        "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1"}},
        "$edgeHub": {"properties.desired": {"routes": {}}},
    }}))
    .unwrap();
    api.apply_configuration_content("edge-1", &content)
        .await
        .unwrap();
    let agent = api.get_module_twin("edge-1", "$edgeAgent").await.unwrap();
    assert_eq!(
        agent.properties.desired.get("schemaVersion"),
        Some(&json!("1.1"))
    );
    let e = api
        .apply_configuration_content("edge-1", &ConfigurationContent::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = api
        .apply_configuration_content("nobody", &content)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    hub.shutdown().await;
}
