//! Twins and queries over real TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use azure_iot_test::{HubEndpoint, Reply, RestClient, emulator, http_client};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn device_twin_get_patch_replace() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    c.put("/devices/t1", json!({})).await;

    let twin = c.get("/twins/t1").await;
    assert_eq!(twin.status, StatusCode::OK);
    let t = &twin.body;
    assert_eq!(t["deviceId"], "t1");
    assert_eq!(t["version"], 1);
    assert_eq!(t["status"], "enabled");
    assert_eq!(t["authenticationType"], "sas");
    assert_eq!(t["properties"]["desired"]["$version"], 1);
    assert_eq!(t["properties"]["reported"]["$version"], 1);
    assert!(t["properties"]["desired"]["$metadata"]["$lastUpdated"].is_string());
    let etag = t["etag"].as_str().unwrap().to_owned();

    // PATCH merges tags and desired; null deletes; versions move; ETag changes.
    let patched = c
        .request(
            Method::PATCH,
            "/twins/t1",
            Some(json!({"tags": {"floor": 3, "room": "a"}, "properties": {"desired": {"temp": 21, "fan": {"on": true}}}})),
            &[("If-Match", &format!("\"{etag}\""))],
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    let p = &patched.body;
    assert_eq!(p["tags"], json!({"floor": 3, "room": "a"}));
    assert_eq!(p["properties"]["desired"]["temp"], 21);
    assert_eq!(p["properties"]["desired"]["$version"], 2);
    assert_eq!(
        p["properties"]["desired"]["$metadata"]["temp"]["$lastUpdatedVersion"],
        2
    );
    assert_eq!(p["version"], 2);
    assert_ne!(p["etag"], etag.as_str());
    let stale = c
        .request(
            Method::PATCH,
            "/twins/t1",
            Some(json!({"tags": {"x": 1}})),
            &[("If-Match", &format!("\"{etag}\""))],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let merged = c
        .request(
            Method::PATCH,
            "/twins/t1",
            Some(json!({"tags": {"room": null}, "properties": {"desired": {"fan": {"speed": 2}}}})),
            &[("If-Match", "\"*\"")],
        )
        .await;
    assert_eq!(merged.body["tags"], json!({"floor": 3}));
    assert_eq!(
        merged.body["properties"]["desired"]["fan"],
        json!({"on": true, "speed": 2})
    );

    // PUT replaces tags and desired wholesale.
    let replaced = c
        .request(
            Method::PUT,
            "/twins/t1",
            Some(json!({"properties": {"desired": {"only": "this"}}})),
            &[("If-Match", "\"*\"")],
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK);
    assert!(replaced.body.get("tags").is_none());
    let desired = replaced.body["properties"]["desired"].as_object().unwrap();
    let user_keys: Vec<_> = desired.keys().filter(|k| !k.starts_with('$')).collect();
    assert_eq!(user_keys, vec!["only"]);
    assert_eq!(replaced.body["properties"]["desired"]["$version"], 4);

    // Service may not write reported properties, nor use bad keys; nothing changes.
    for bad in [
        json!({"properties": {"reported": {"x": 1}}}),
        json!({"properties": {"desired": {"a.b": 1}}}),
        json!({"tags": "not an object"}),
        json!([]),
    ] {
        let r = c
            .request(Method::PATCH, "/twins/t1", Some(bad.clone()), &[])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.error_name(), "ArgumentInvalid");
    }
    assert_eq!(c.get("/twins/t1").await.body["version"], 4);
    assert_eq!(c.get("/twins/none").await.status, StatusCode::NOT_FOUND);
    hub.shutdown().await;
}

#[tokio::test]
async fn module_twins() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    c.put("/devices/d", json!({})).await;
    c.put("/devices/d/modules/m", json!({})).await;
    let twin = c.get("/twins/d/modules/m").await;
    assert_eq!(twin.body["moduleId"], "m");
    assert_eq!(twin.body["deviceId"], "d");
    let r = c
        .request(
            Method::PATCH,
            "/twins/d/modules/m",
            Some(json!({"properties": {"desired": {"k": "v"}}})),
            &[],
        )
        .await;
    assert_eq!(r.body["properties"]["desired"]["k"], "v");
    let r = c
        .request(
            Method::PUT,
            "/twins/d/modules/m",
            Some(json!({"tags": {"t": 1}})),
            &[],
        )
        .await;
    assert_eq!(r.body["tags"], json!({"t": 1}));
    assert!(r.body["properties"]["desired"].get("k").is_none());
    let missing = c.get("/twins/d/modules/zz").await;
    assert_eq!(missing.error_name(), "ModuleNotFound");
    hub.shutdown().await;
}

async fn query(c: &RestClient, text: &str, headers: &[(&str, &str)]) -> Reply {
    c.request(
        Method::POST,
        "/devices/query",
        Some(json!({"query": text})),
        headers,
    )
    .await
}

#[tokio::test]
async fn queries_filter_project_aggregate_and_page() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    for (id, region, freq) in [
        ("d1", "US", 30),
        ("d2", "US", 90),
        ("d3", "EU", 60),
        ("d4", "EU", 120),
        ("d5", "US", 60),
    ] {
        c.put(&format!("/devices/{id}"), json!({})).await;
        c.request(Method::PATCH, &format!("/twins/{id}"), Some(json!({"tags": {"location": {"region": region}}, "properties": {"desired": {"freq": freq}}})), &[])
            .await;
    }
    c.put("/devices/d1/modules/m1", json!({})).await;

    let all = query(&c, "SELECT * FROM devices", &[]).await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);
    assert_eq!(all.body.as_array().unwrap().len(), 5);
    assert_eq!(all.headers["x-ms-item-type"], "twin");
    assert!(
        all.headers.get("x-ms-continuation").is_none(),
        "no continuation on the last page"
    );

    let us = query(
        &c,
        "SELECT * FROM devices WHERE tags.location.region = 'US' AND properties.desired.freq >= 60",
        &[],
    )
    .await;
    let ids: Vec<_> = us
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["deviceId"].clone())
        .collect();
    assert_eq!(ids, vec![json!("d2"), json!("d5")]);

    let projected = query(
        &c,
        "SELECT DeviceId, properties.desired.freq FROM devices WHERE deviceId IN ['d3', 'd4']",
        &[],
    )
    .await;
    assert_eq!(projected.headers["x-ms-item-type"], "raw");
    assert_eq!(
        projected.body,
        json!([{"deviceId": "d3", "freq": 60}, {"deviceId": "d4", "freq": 120}])
    );

    let count = query(&c, "SELECT COUNT() AS total FROM devices", &[]).await;
    assert_eq!(count.body, json!([{"total": 5}]));
    let grouped = query(&c, "SELECT tags.location.region AS region, COUNT() AS n FROM devices GROUP BY tags.location.region", &[]).await;
    assert_eq!(
        grouped.body,
        json!([{"region": "US", "n": 3}, {"region": "EU", "n": 2}])
    );

    let modules = query(
        &c,
        "SELECT * FROM devices.modules WHERE deviceId = 'd1'",
        &[],
    )
    .await;
    assert_eq!(modules.body.as_array().unwrap().len(), 1);
    assert_eq!(modules.body[0]["moduleId"], "m1");

    // Paging: 2 per page, continuation echoed back, absent on the last page.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut headers = vec![("x-ms-max-item-count", "2")];
        if let Some(t) = &token {
            headers.push(("x-ms-continuation", t.as_str()));
        }
        let page = query(&c, "SELECT * FROM devices", &headers).await;
        pages += 1;
        seen.extend(
            page.body
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["deviceId"].as_str().unwrap().to_owned()),
        );
        match page.headers.get("x-ms-continuation") {
            Some(t) => {
                assert!(
                    !t.is_empty(),
                    "an empty continuation makes the Node SDK loop forever"
                );
                token = Some(t.to_str().unwrap().to_owned());
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, vec!["d1", "d2", "d3", "d4", "d5"]);

    for (text, headers) in [
        ("SELECT * FROM nowhere", vec![]),
        ("SELEC * FROM devices", vec![]),
        ("SELECT * FROM devices", vec![("x-ms-max-item-count", "0")]),
        (
            "SELECT * FROM devices",
            vec![("x-ms-continuation", "forged")],
        ),
    ] {
        let r = query(&c, text, &headers).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{text} {headers:?}");
        assert_eq!(r.error_name(), "ArgumentInvalid");
    }
    let r = c
        .request(
            Method::POST,
            "/devices/query",
            Some(json!({"nope": 1})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    hub.shutdown().await;
}

#[tokio::test]
async fn authorization_is_enforced_per_right() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let owner = RestClient::new(&ep, "iothubowner");
    owner.put("/devices/a1", json!({})).await;

    // Every failure is a 401 IotHubUnauthorizedAccess with a reason, and never echoes the token.
    let expect_401 = |r: &Reply, why: &str| {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{why}: {:?}", r.body);
        assert_eq!(r.error_name(), "IotHubUnauthorizedAccess", "{why}");
        assert_eq!(r.body["ErrorCode"], 401002);
    };
    let read = RestClient::new(&ep, "registryRead");
    assert_eq!(read.get("/devices/a1").await.status, StatusCode::OK);
    expect_401(
        &read.put("/devices/a2", json!({})).await,
        "registryRead cannot write",
    );
    let service = RestClient::new(&ep, "service");
    assert_eq!(service.get("/twins/a1").await.status, StatusCode::OK);
    expect_401(
        &service.get("/devices/a1").await,
        "service cannot read the registry",
    );
    let device = RestClient::new(&ep, "device");
    expect_401(
        &device.get("/twins/a1").await,
        "device policy cannot use service APIs",
    );
    let rw = RestClient::new(&ep, "registryReadWrite");
    assert_eq!(
        rw.put("/devices/a3", json!({})).await.status,
        StatusCode::OK
    );

    let garbage = owner
        .clone()
        .with_token("SharedAccessSignature sr=localhost&sig=AAAA&se=99999999999&skn=iothubowner");
    let r = garbage.get("/devices/a1").await;
    expect_401(&r, "bad signature");
    assert!(!r.body.to_string().contains("sig=AAAA"));
    let expired = owner.clone().with_token({
        let cs =
            azure_iot_core::ServiceConnectionString::parse(hub.owner_connection_string()).unwrap();
        azure_iot_core::SasToken::generate(
            &azure_iot_core::ResourceUri::hub("localhost"),
            cs.key(),
            Some("iothubowner"),
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000),
        )
        .secret()
        .to_owned()
    });
    expect_401(&expired.get("/devices/a1").await, "expired");
    let other_hub = owner.clone().with_token({
        let cs =
            azure_iot_core::ServiceConnectionString::parse(hub.owner_connection_string()).unwrap();
        azure_iot_core::SasToken::generate_with_ttl(
            &azure_iot_core::ResourceUri::hub("elsewhere.azure-devices.net"),
            cs.key(),
            Some("iothubowner"),
            std::time::Duration::from_secs(600),
        )
        .secret()
        .to_owned()
    });
    expect_401(&other_hub.get("/devices/a1").await, "audience");
    let no_header = http_client(&ep)
        .get(format!(
            "https://localhost:{}/devices/a1?api-version=2021-04-12",
            hub.https_addr().port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(no_header.status(), StatusCode::UNAUTHORIZED);
    // A refused write changed nothing.
    assert_eq!(owner.get("/devices/a2").await.status, StatusCode::NOT_FOUND);
    let body: Value = owner.get("/statistics/devices").await.body;
    assert_eq!(body["totalDeviceCount"], 2);
    hub.shutdown().await;
}
