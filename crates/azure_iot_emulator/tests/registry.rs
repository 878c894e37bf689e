//! Identity registry over real TLS: devices, modules, bulk, statistics, purge, error cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use azure_iot_test::{HubEndpoint, RestClient, emulator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn device_lifecycle_with_etags() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");

    // Create: no If-Match, keys generated, full Device echoed with 200 (Python accepts only 200).
    let created = c.put("/devices/dev1", json!({"deviceId": "dev1"})).await;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);
    let device = &created.body;
    assert_eq!(device["deviceId"], "dev1");
    assert_eq!(device["status"], "enabled");
    assert_eq!(device["connectionState"], "Disconnected");
    assert_eq!(device["authentication"]["type"], "sas");
    let key = device["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();
    assert_eq!(key.len(), 44, "32-byte base64 key");
    let etag = device["etag"].as_str().unwrap().to_owned();

    // Create again without If-Match: 409 DeviceAlreadyExists.
    let again = c.put("/devices/dev1", json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_name(), "DeviceAlreadyExists");
    assert_eq!(again.body["ErrorCode"], 409001);
    assert_eq!(again.headers["iothub-errorcode"], "DeviceAlreadyExists");

    // Update with a stale ETag: 412; with the current one (quoted, as the SDKs send): 200.
    let stale = c
        .request(
            Method::PUT,
            "/devices/dev1",
            Some(json!({"status": "disabled"})),
            &[("If-Match", "\"bm9wZQ==\"")],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.error_name(), "PreconditionFailed");
    let quoted = format!("\"{etag}\"");
    let updated = c
        .request(
            Method::PUT,
            "/devices/dev1",
            Some(json!({"deviceId": "dev1", "status": "disabled", "statusReason": "maintenance"})),
            &[("If-Match", &quoted)],
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(updated.body["status"], "disabled");
    assert_eq!(updated.body["statusReason"], "maintenance");
    assert_ne!(
        updated.body["etag"],
        etag.as_str(),
        "every write changes the ETag"
    );
    // The update named no keys, so the device keeps its own (the Node SDK sends empty keys on
    // every update; regenerating them would lock the device out).
    assert_eq!(
        updated.body["authentication"]["symmetricKey"]["primaryKey"],
        key
    );
    let got = c.get("/devices/dev1").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, updated.body);

    // Delete with a stale ETag: 412 and still there; with `*`: 204; then 404.
    let stale = c
        .request(
            Method::DELETE,
            "/devices/dev1",
            None,
            &[("If-Match", "\"stale\"")],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(c.get("/devices/dev1").await.status, StatusCode::OK);
    let deleted = c
        .request(
            Method::DELETE,
            "/devices/dev1",
            None,
            &[("If-Match", "\"*\"")],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = c.get("/devices/dev1").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.error_name(), "DeviceNotFound");
    assert_eq!(gone.body["ErrorCode"], 404001);
    assert_eq!(
        c.delete("/devices/dev1").await.status,
        StatusCode::NOT_FOUND
    );
    // Updating a device that does not exist is a 404, not a create.
    let missing = c
        .request(
            Method::PUT,
            "/devices/ghost",
            Some(json!({})),
            &[("If-Match", "\"abc\"")],
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    hub.shutdown().await;
}

#[tokio::test]
async fn given_keys_and_thumbprints_are_kept() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let r = c
        .put(
            "/devices/sas1",
            json!({"authentication": {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": key}}}),
        )
        .await;
    assert_eq!(r.body["authentication"]["symmetricKey"]["primaryKey"], key);
    let thumb = "a".repeat(40);
    let r = c
        .put(
            "/devices/x509",
            json!({"authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": thumb}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["authentication"]["type"], "selfSigned");
    assert_eq!(
        r.body["authentication"]["x509Thumbprint"]["primaryThumbprint"],
        "A".repeat(40)
    );
    assert_eq!(
        r.body["authentication"]["symmetricKey"]["primaryKey"],
        Value::Null
    );
    let r = c
        .put("/devices/ca1", json!({"authentication": {"type": "certificateAuthority"}, "capabilities": {"iotEdge": true}}))
        .await;
    assert_eq!(r.body["authentication"]["type"], "certificateAuthority");
    assert_eq!(r.body["capabilities"]["iotEdge"], true);
    hub.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_a_400_and_changes_nothing() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    c.put("/devices/keep", json!({})).await;
    let cases: Vec<(&str, Value)> = vec![
        ("/devices/has%20space", json!({})),
        ("/devices/slash%2Fid", json!({})),
        (
            &*Box::leak(format!("/devices/{}", "x".repeat(129)).into_boxed_str()),
            json!({}),
        ),
        ("/devices/d2", json!({"deviceId": "other"})),
        ("/devices/d2", json!({"status": "sleeping"})),
        (
            "/devices/d2",
            json!({"authentication": {"symmetricKey": {"primaryKey": "not base64!"}}}),
        ),
        (
            "/devices/d2",
            json!({"authentication": {"symmetricKey": {"primaryKey": "AAAA"}}}),
        ),
        (
            "/devices/d2",
            json!({"authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": "zz"}}}),
        ),
        ("/devices/d2", json!({"authentication": {"type": "magic"}})),
        ("/devices/d2", json!([1, 2])),
        ("/devices/d2", json!({"status": 5})),
    ];
    for (path, body) in cases {
        let r = c.put(path, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{path} {body}: {:?}",
            r.body
        );
        assert_eq!(r.error_name(), "ArgumentInvalid", "{path}");
        assert_eq!(r.body["ErrorCode"], 400004);
    }
    for raw in [b"{not json".to_vec(), Vec::new(), vec![0xff, 0xfe]] {
        let r = c.raw_body(Method::PUT, "/devices/d2", raw).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }
    let huge = c
        .raw_body(Method::PUT, "/devices/d2", vec![b' '; 3 * 1024 * 1024])
        .await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Nothing was created by any of that.
    let stats = c.get("/statistics/devices").await;
    assert_eq!(
        stats.body,
        json!({"totalDeviceCount": 1, "enabledDeviceCount": 1, "disabledDeviceCount": 0})
    );
    assert_eq!(c.get("/devices/d2").await.status, StatusCode::NOT_FOUND);
    hub.shutdown().await;
}

#[tokio::test]
async fn ids_use_the_whole_hub_alphabet() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    // Percent-encoded in the path as the SDKs send them; decoded before use.
    let id = "a-b:c.d+e%f_g#h*i?j!k(l)m,n=o@p;q$r's";
    let path = format!(
        "/devices/{}",
        azure_iot_core::encoding::encode_component(id)
    );
    let r = c.put(&path, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["deviceId"], id);
    assert_eq!(c.get(&path).await.body["deviceId"], id);
    hub.shutdown().await;
}

#[tokio::test]
async fn listing_devices() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    for id in ["c", "a", "b"] {
        c.put(&format!("/devices/{id}"), json!({})).await;
    }
    for path in ["/devices", "/devices/"] {
        let r = c.get(path).await;
        let ids: Vec<_> = r
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["deviceId"].clone())
            .collect();
        assert_eq!(ids, vec![json!("a"), json!("b"), json!("c")], "{path}");
    }
    let top = c.get("/devices?top=2").await;
    assert_eq!(top.body.as_array().unwrap().len(), 2);
    assert_eq!(
        c.get("/devices?top=0").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.get("/devices?top=x").await.status,
        StatusCode::BAD_REQUEST
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn module_lifecycle() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let orphan = c.put("/devices/nodev/modules/m1", json!({})).await;
    assert_eq!(orphan.status, StatusCode::NOT_FOUND);
    assert_eq!(orphan.error_name(), "DeviceNotFound");
    c.put("/devices/d1", json!({})).await;
    let m = c
        .put(
            "/devices/d1/modules/m1",
            json!({"moduleId": "m1", "managedBy": "edge"}),
        )
        .await;
    assert_eq!(m.status, StatusCode::OK, "{:?}", m.body);
    assert_eq!(m.body["moduleId"], "m1");
    assert_eq!(m.body["deviceId"], "d1");
    assert_eq!(m.body["managedBy"], "edge");
    assert_eq!(m.body["authentication"]["type"], "sas");
    assert_eq!(
        c.put("/devices/d1/modules/m1", json!({}))
            .await
            .error_name(),
        "ModuleAlreadyExists"
    );
    c.put("/devices/d1/modules/m2", json!({})).await;
    let list = c.get("/devices/d1/modules").await;
    assert_eq!(list.body.as_array().unwrap().len(), 2);
    let etag = m.body["etag"].as_str().unwrap().to_owned();
    let wrong = c
        .request(
            Method::DELETE,
            "/devices/d1/modules/m1",
            None,
            &[("If-Match", "\"x\"")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::PRECONDITION_FAILED);
    let tag = format!("\"{etag}\"");
    let ok = c
        .request(
            Method::DELETE,
            "/devices/d1/modules/m1",
            None,
            &[("If-Match", &tag)],
        )
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
    let gone = c.get("/devices/d1/modules/m1").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.error_name(), "ModuleNotFound");
    // Deleting the device deletes its modules.
    c.delete("/devices/d1").await;
    c.put("/devices/d1", json!({})).await;
    assert_eq!(c.get("/devices/d1/modules").await.body, json!([]));
    assert_eq!(
        c.get("/devices/zz/modules").await.status,
        StatusCode::NOT_FOUND
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn bulk_operations_report_per_device() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    c.put("/devices/exists", json!({})).await;
    let r = c
        .request(
            Method::POST,
            "/devices",
            Some(json!([
                {"id": "b1", "importMode": "create", "tags": {"floor": 1}},
                {"id": "b2", "importMode": "create", "status": "disabled"},
                {"id": "exists", "importMode": "create"},
                {"id": "bad id", "importMode": "create"},
                {"id": "b3", "importMode": "teleport"},
                {"id": "b1", "moduleId": "m", "importMode": "create"},
            ])),
            &[],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "any failure gives 400 with the result body"
    );
    assert_eq!(r.body["isSuccessful"], false);
    let errors = r.body["errors"].as_array().unwrap();
    let failed: Vec<_> = errors
        .iter()
        .map(|e| {
            (
                e["deviceId"].as_str().unwrap(),
                e["errorCode"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        vec![
            ("exists", "DeviceAlreadyExists"),
            ("bad id", "ArgumentInvalid"),
            ("b3", "ArgumentInvalid")
        ]
    );
    // The successful entries were applied, including a module of a device created in the
    // same call and the tags given on create.
    assert_eq!(c.get("/devices/b2").await.body["status"], "disabled");
    assert_eq!(c.get("/devices/b1/modules/m").await.status, StatusCode::OK);
    assert_eq!(c.get("/twins/b1").await.body["tags"], json!({"floor": 1}));

    // Node's capitalised modes; updateTwin; conditional delete with a wrong ETag.
    let r = c
        .request(
            Method::POST,
            "/devices",
            Some(json!([
                {"id": "b2", "importMode": "Update", "status": "enabled"},
                {"id": "b1", "importMode": "updateTwin", "properties": {"desired": {"x": 1}}},
                {"id": "exists", "importMode": "DeleteIfMatchETag", "eTag": "wrong"},
            ])),
            &[],
        )
        .await;
    assert_eq!(r.body["errors"][0]["deviceId"], "exists");
    assert_eq!(r.body["errors"][0]["errorCode"], "PreconditionFailed");
    assert_eq!(c.get("/devices/b2").await.body["status"], "enabled");
    assert_eq!(
        c.get("/twins/b1").await.body["properties"]["desired"]["x"],
        1
    );

    let r = c
        .request(
            Method::POST,
            "/devices",
            Some(json!([{"id": "b2", "importMode": "delete"}])),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({"isSuccessful": true, "errors": [], "warnings": []})
    );
    assert_eq!(c.get("/devices/b2").await.status, StatusCode::NOT_FOUND);

    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"id": format!("n{i}"), "importMode": "create"}))
        .collect();
    let r = c
        .request(Method::POST, "/devices", Some(Value::Array(too_many)), &[])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_name(), "ArgumentInvalid");
    assert_eq!(
        c.request(Method::POST, "/devices", Some(json!([])), &[])
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(c.get("/devices/n0").await.status, StatusCode::NOT_FOUND);
    hub.shutdown().await;
}

#[tokio::test]
async fn statistics_and_purge() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    c.put("/devices/on", json!({})).await;
    c.put("/devices/off", json!({"status": "disabled"})).await;
    assert_eq!(
        c.get("/statistics/devices").await.body,
        json!({"totalDeviceCount": 2, "enabledDeviceCount": 1, "disabledDeviceCount": 1})
    );
    assert_eq!(
        c.get("/statistics/service").await.body,
        json!({"connectedDeviceCount": 0})
    );
    let purge = c.delete("/devices/on/commands").await;
    assert_eq!(purge.status, StatusCode::OK);
    assert_eq!(
        purge.body,
        json!({"totalMessagesPurged": 0, "deviceId": "on", "moduleId": null})
    );
    assert_eq!(
        c.delete("/devices/nobody/commands").await.status,
        StatusCode::NOT_FOUND
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn unsupported_features_say_so() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let twins = c.get("/digitaltwins/dt1").await;
    assert_eq!(twins.status, StatusCode::NOT_IMPLEMENTED);
    assert!(
        twins.body["Message"]
            .as_str()
            .unwrap()
            .contains("not supported by the emulator")
    );
    assert_eq!(
        c.get("/digitaltwins/c1").await.status,
        StatusCode::NOT_IMPLEMENTED
    );
    // Jobs v2 is served: an unknown job is the hub's 404, not a 501.
    let job = c.get("/jobs/v2/job1").await;
    assert_eq!(job.status, StatusCode::NOT_FOUND);
    assert_eq!(job.error_name(), "JobNotFound");
    let unknown = c.get("/no/such/thing").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_name(), "NotFound");
    hub.shutdown().await;
}

#[tokio::test]
async fn requests_for_dps_go_to_the_dps_not_the_hub() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    // A hub token is no DPS token; an unknown id scope is DPS's 404. Both in DPS's error body.
    for (path, status, code) in [
        (
            "/enrollments/e1?api-version=2021-10-01",
            StatusCode::UNAUTHORIZED,
            401002,
        ),
        (
            "/0ne00000001/registrations/dev1/register?api-version=2021-06-01",
            StatusCode::NOT_FOUND,
            404001,
        ),
    ] {
        let answer = c.request(Method::PUT, path, Some(json!({})), &[]).await;
        assert_eq!(answer.status, status, "{path}");
        assert_eq!(answer.body["errorCode"], json!(code), "{:?}", answer.body);
    }
    // Hub paths are untouched.
    assert_eq!(c.get("/devices/nobody").await.status, StatusCode::NOT_FOUND);
}
