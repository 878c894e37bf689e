//! Configurations (automatic device management) over real TLS: applied to matching twins by
//! priority, re-evaluated on tag changes and deletes, metrics, ETags, bad input, the desired
//! patch reaching a connected device, `applyConfigurationContent`, and a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_protocol::mqtt::codec::{ConnectReturnCode, QoS};
use azure_iot_test::{HubEndpoint, MqttClient, RestClient, device_token, emulator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn config(id: &str, condition: &str, priority: i32, content: Value) -> Value {
    json!({
        "id": id,
        "schemaVersion": "1.0",
        "labels": {"team": "ops"},
        "content": {"deviceContent": content},
        "targetCondition": condition,
        "priority": priority,
    })
}

async fn desired(c: &RestClient, device: &str) -> Value {
    let twin = c.get(&format!("/twins/{device}")).await;
    assert_eq!(twin.status, StatusCode::OK);
    twin.body["properties"]["desired"].clone()
}

async fn tag(c: &RestClient, device: &str, tags: Value) {
    let reply = c
        .request(
            Method::PATCH,
            &format!("/twins/{device}"),
            Some(json!({ "tags": tags })),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

#[tokio::test]
async fn highest_priority_wins_per_path_and_twins_follow_changes() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    c.register_device("d1").await;
    c.register_device("d2").await;
    tag(&c, "d1", json!({"env": "prod"})).await;
    tag(&c, "d2", json!({"env": "test"})).await;

    let low = c
        .put(
            "/configurations/low",
            config(
                "low",
                "tags.env='prod'",
                1,
                json!({"properties.desired.fw": {"version": "1.0"}, "properties.desired.interval": 10}),
            ),
        )
        .await;
    assert_eq!(low.status, StatusCode::OK, "{:?}", low.body);
    assert!(low.body["etag"].is_string());
    assert!(low.body["createdTimeUtc"].is_string());
    assert_eq!(low.body["systemMetrics"]["results"]["targetedCount"], 1);
    assert_eq!(low.body["systemMetrics"]["results"]["appliedCount"], 1);
    let d1 = desired(&c, "d1").await;
    assert_eq!(d1["fw"], json!({"version": "1.0"}));
    assert_eq!(d1["interval"], 10);
    assert!(desired(&c, "d2").await.get("fw").is_none());
    let twin = c.get("/twins/d1").await.body;
    assert_eq!(twin["configurations"]["low"]["status"], "Applied");

    // A higher priority configuration for every device takes `fw`, not `interval`.
    let mut high = config(
        "high",
        "*",
        5,
        json!({"properties.desired.fw": {"version": "2.0"}}),
    );
    high["metrics"] = json!({"queries": {
        "applied": "SELECT deviceId FROM devices WHERE configurations.[[high]].status = 'Applied'",
        "prod": "SELECT deviceId FROM devices WHERE tags.env = 'prod'",
    }});
    let reply = c.put("/configurations/high", high).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let d1 = desired(&c, "d1").await;
    assert_eq!(d1["fw"], json!({"version": "2.0"}));
    assert_eq!(d1["interval"], 10);
    assert_eq!(desired(&c, "d2").await["fw"], json!({"version": "2.0"}));
    let high = c.get("/configurations/high").await.body;
    assert_eq!(high["systemMetrics"]["results"]["targetedCount"], 2);
    assert_eq!(high["systemMetrics"]["results"]["appliedCount"], 2);
    assert_eq!(
        high["systemMetrics"]["queries"]["appliedCount"],
        "select deviceId from devices where configurations.[[high]].status = 'Applied'"
    );
    assert_eq!(high["metrics"]["results"]["applied"], 2);
    assert_eq!(high["metrics"]["results"]["prod"], 1);
    // `low` still owns `interval` on d1, so it stays applied there.
    let low = c.get("/configurations/low").await.body;
    assert_eq!(low["systemMetrics"]["results"]["appliedCount"], 1);

    // The same priority: the configuration created last wins.
    c.put(
        "/configurations/tie",
        config(
            "tie",
            "*",
            5,
            json!({"properties.desired.fw": {"version": "3.0"}}),
        ),
    )
    .await;
    assert_eq!(desired(&c, "d1").await["fw"], json!({"version": "3.0"}));
    let high = c.get("/configurations/high").await.body;
    assert_eq!(high["systemMetrics"]["results"]["appliedCount"], 0);
    assert_eq!(
        c.get("/twins/d2").await.body["configurations"]["high"]["status"],
        "Targeted"
    );
    let reply = c.delete("/configurations/tie").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(desired(&c, "d1").await["fw"], json!({"version": "2.0"}));

    // Deleting `high`: d1 falls back to `low`, d2 loses the setting.
    let reply = c.delete("/configurations/high").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(desired(&c, "d1").await["fw"], json!({"version": "1.0"}));
    assert!(desired(&c, "d2").await.get("fw").is_none());
    assert!(
        c.get("/twins/d2")
            .await
            .body
            .get("configurations")
            .is_none()
    );

    // A tag change brings d2 into `low`'s target...
    tag(&c, "d2", json!({"env": "prod"})).await;
    assert_eq!(desired(&c, "d2").await["interval"], 10);
    // ...and out again: the settings are removed.
    tag(&c, "d2", json!({"env": "lab"})).await;
    let d2 = desired(&c, "d2").await;
    assert!(
        d2.get("interval").is_none() && d2.get("fw").is_none(),
        "{d2}"
    );
    // A new device matching at creation gets the content at once.
    c.put("/devices/d3", json!({})).await;
    tag(&c, "d3", json!({"env": "prod"})).await;
    assert_eq!(desired(&c, "d3").await["interval"], 10);
    let list = c.get("/configurations").await;
    assert_eq!(list.status, StatusCode::OK);
    let ids: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["low"]);
    assert_eq!(list.body[0]["systemMetrics"]["results"]["targetedCount"], 2);
    hub.shutdown().await;
}

#[tokio::test]
async fn etags_guard_updates_and_content_is_immutable() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let body = config("cfg", "tags.a='b'", 1, json!({"properties.desired.x": 1}));
    let created = c.put("/configurations/cfg", body.clone()).await;
    let etag = created.body["etag"].as_str().unwrap().to_owned();

    let again = c.put("/configurations/cfg", body.clone()).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_name(), "ConfigurationAlreadyExists");

    let mut update = body.clone();
    update["priority"] = json!(7);
    update["targetCondition"] = json!("tags.a='c'");
    let stale = c
        .request(
            Method::PUT,
            "/configurations/cfg",
            Some(update.clone()),
            &[("If-Match", "\"bm9wZQ==\"")],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let updated = c
        .request(
            Method::PUT,
            "/configurations/cfg",
            Some(update.clone()),
            &[("If-Match", &format!("\"{etag}\""))],
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(updated.body["priority"], 7);
    assert_eq!(
        updated.body["createdTimeUtc"],
        created.body["createdTimeUtc"]
    );
    assert_ne!(updated.body["etag"], etag.as_str());
    // Python sends the ETag unquoted.
    let new_etag = updated.body["etag"].as_str().unwrap().to_owned();
    let mut content_change = update.clone();
    content_change["content"] = json!({"deviceContent": {"properties.desired.x": 2}});
    let refused = c
        .request(
            Method::PUT,
            "/configurations/cfg",
            Some(content_change),
            &[("If-Match", &new_etag)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        c.get("/configurations/cfg").await.body["etag"],
        new_etag.as_str()
    );

    let missing = c.get("/configurations/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_name(), "ConfigurationNotFound");
    let stale_delete = c
        .request(
            Method::DELETE,
            "/configurations/cfg",
            None,
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(stale_delete.status, StatusCode::PRECONDITION_FAILED);
    let deleted = c
        .request(
            Method::DELETE,
            "/configurations/cfg",
            None,
            &[("If-Match", &new_etag)],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.delete("/configurations/cfg").await.status,
        StatusCode::NOT_FOUND
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    c.register_device("d1").await;
    let cases = [
        (
            "bad",
            config(
                "bad",
                "tags.a = = 'b'",
                1,
                json!({"properties.desired.x": 1}),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad",
            config("bad", "*", 1, json!({"properties.reported.x": 1})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad",
            config("bad", "*", 1, json!({})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "Bad",
            config("Bad", "*", 1, json!({"properties.desired.x": 1})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad",
            config("other", "*", 1, json!({"properties.desired.x": 1})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad",
            json!({"id": "bad", "content": {"modulesContent": {"$edgeAgent": {"properties.desired": {}}}}, "targetCondition": "*"}),
            StatusCode::NOT_IMPLEMENTED,
        ),
    ];
    for (id, body, status) in cases {
        let reply = c.put(&format!("/configurations/{id}"), body.clone()).await;
        assert_eq!(reply.status, status, "{body}: {:?}", reply.body);
    }
    let mut metrics = config("bad", "*", 1, json!({"properties.desired.x": 1}));
    metrics["metrics"] = json!({"queries": {"m": "SELECT FROM"}});
    assert_eq!(
        c.put("/configurations/bad", metrics).await.status,
        StatusCode::BAD_REQUEST
    );
    let not_json = c
        .raw_body(Method::PUT, "/configurations/bad", b"{".to_vec())
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(c.get("/configurations").await.body, json!([]));
    assert!(
        c.get("/twins/d1").await.body["properties"]["desired"]
            .get("x")
            .is_none()
    );

    // testQueries says what is wrong without storing anything.
    let tested = c
        .request(
            Method::POST,
            "/configurations/testQueries",
            Some(json!({"targetCondition": "tags.a = ", "customMetricQueries": {"ok": "SELECT deviceId FROM devices", "broken": "SELECT * FROM nowhere"}})),
            &[],
        )
        .await;
    assert_eq!(tested.status, StatusCode::OK);
    assert!(
        !tested.body["targetConditionError"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let errors = tested.body["customMetricQueryErrors"].as_object().unwrap();
    assert_eq!(errors.keys().collect::<Vec<_>>(), ["broken"]);
    let fine = c
        .request(
            Method::POST,
            "/configurations/testQueries",
            Some(json!({"targetCondition": "tags.a = 'b'"})),
            &[],
        )
        .await;
    assert_eq!(fine.body["targetConditionError"], "");

    // The hub's limit of 100 configurations.
    for i in 0..100 {
        let id = format!("c{i}");
        let reply = c
            .put(
                &format!("/configurations/{id}"),
                config(&id, "", 0, json!({"properties.desired.x": i})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let over = c
        .put(
            "/configurations/c100",
            config("c100", "", 0, json!({"properties.desired.x": 1})),
        )
        .await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(over.error_name(), "ConfigurationCountLimitExceeded");
    assert_eq!(
        c.get("/configurations?top=5")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        c.get("/configurations/?top=0").await.status,
        StatusCode::BAD_REQUEST
    );
    // A registry reader may read but not write.
    let reader = RestClient::new(&ep, "registryRead");
    assert_eq!(
        reader.get("/configurations/c1").await.status,
        StatusCode::OK
    );
    assert_eq!(
        reader.delete("/configurations/c1").await.status,
        StatusCode::UNAUTHORIZED
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_connected_device_receives_the_configuration_as_a_desired_patch() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    tag(&c, "dev1", json!({"fleet": "a"})).await;
    let token = device_token(&ep, "dev1", None, &key, Duration::from_secs(3600));
    let (mut device, ack) = MqttClient::connect(&ep, "dev1", &token, true, 60).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    device
        .subscribe("$iothub/twin/PATCH/properties/desired/#", QoS::AtLeastOnce)
        .await;
    c.put(
        "/configurations/fleet-a",
        config(
            "fleet-a",
            "tags.fleet = 'a'",
            1,
            json!({"properties.desired.telemetry.interval": 30}),
        ),
    )
    .await;
    let patch = device.next_publish().await;
    assert_eq!(
        patch.topic,
        "$iothub/twin/PATCH/properties/desired/?$version=2"
    );
    let body: Value = serde_json::from_slice(&patch.payload).unwrap();
    assert_eq!(body, json!({"telemetry": {"interval": 30}, "$version": 2}));
    hub.shutdown().await;
}

#[tokio::test]
async fn apply_configuration_content_writes_the_module_twins() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    c.put("/devices/edge1", json!({"capabilities": {"iotEdge": true}}))
        .await;
    c.put("/devices/edge1/modules/$edgeHub", json!({})).await;
    c.request(
        Method::PATCH,
        "/twins/edge1/modules/$edgeHub",
        Some(json!({"properties": {"desired": {"old": true}}})),
        &[],
    )
    .await;
    let content = json!({"modulesContent": {
        "$edgeAgent": {"properties.desired": {"schemaVersion": "1.0", "modules": {"sensor": {"type": "docker"}}}},
        "$edgeHub": {"properties.desired": {"routes": {"all": "FROM /* INTO $upstream"}}},
    }, "deviceContent": {"properties.desired.edge.mode": "managed"}});
    let reply = c
        .request(
            Method::POST,
            "/devices/edge1/applyConfigurationContent",
            Some(content.clone()),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{:?}", reply.body);
    let agent = c.get("/twins/edge1/modules/$edgeAgent").await;
    assert_eq!(agent.status, StatusCode::OK);
    assert_eq!(
        agent.body["properties"]["desired"]["modules"]["sensor"]["type"],
        "docker"
    );
    let edge_hub = c.get("/twins/edge1/modules/$edgeHub").await.body;
    assert_eq!(
        edge_hub["properties"]["desired"]["routes"]["all"],
        "FROM /* INTO $upstream"
    );
    assert!(
        edge_hub["properties"]["desired"].get("old").is_none(),
        "replaced, not merged"
    );
    assert_eq!(desired(&c, "edge1").await["edge"]["mode"], "managed");

    let missing = c
        .request(
            Method::POST,
            "/devices/nobody/applyConfigurationContent",
            Some(content),
            &[],
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    for bad in [
        json!({"deviceContent": {"properties.desired.x": 1}}),
        json!({"modulesContent": {"m": {"properties.desired": 1}}}),
        json!({"modulesContent": {"bad/module": {"properties.desired": {}}}}),
    ] {
        let reply = c
            .request(
                Method::POST,
                "/devices/edge1/applyConfigurationContent",
                Some(bad.clone()),
                &[],
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(
        c.get("/twins/edge1/modules/m").await.status,
        StatusCode::NOT_FOUND
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn configurations_and_their_effect_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let start = || async {
        azure_iot_emulator::Emulator::builder()
            .https_port(0)
            .mqtt_port(0)
            .amqp_port(0)
            .data_dir(dir.path())
            .start()
            .await
            .unwrap()
    };
    let hub = start().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    c.register_device("d1").await;
    c.put(
        "/configurations/keep",
        config("keep", "*", 1, json!({"properties.desired.x": 1})),
    )
    .await;
    let before = c.get("/configurations/keep").await.body;
    let version = desired(&c, "d1").await["$version"].clone();
    hub.shutdown().await;

    let hub = start().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let after = c.get("/configurations/keep").await.body;
    assert_eq!(after, before);
    let d1 = desired(&c, "d1").await;
    assert_eq!(d1["x"], 1);
    assert_eq!(d1["$version"], version, "nothing is rewritten at start");
    // Ownership was rebuilt: deleting the configuration removes its setting.
    c.delete("/configurations/keep").await;
    assert!(desired(&c, "d1").await.get("x").is_none());
    hub.shutdown().await;
}
