//! Import/export devices jobs over real TLS: an export read back from the blob endpoint, an
//! export → import round trip into a fresh emulator (keys, status, twins, modules,
//! configurations), a failed line reported in `importErrors.log`, and refused jobs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_emulator::EmulatorHandle;
use azure_iot_test::{HubEndpoint, RestClient, emulator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A container SAS URI minted by the emulator.
async fn container(c: &RestClient, name: &str) -> String {
    let reply = c
        .request(
            Method::POST,
            &format!("/$emulator/blob/containers/{name}/sas"),
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body["containerUri"].as_str().unwrap().to_owned()
}

/// `https://host:port/c?sas` + blob → the blob's URI with the SAS.
fn blob_uri(container: &str, blob: &str) -> String {
    let (base, sas) = container.split_once('?').unwrap();
    format!("{base}/{blob}?{sas}")
}

/// Starts a job and waits (polling the job, as the SDKs do) until it has ended.
async fn run_job(c: &RestClient, job: Value) -> Value {
    let created = c
        .request(Method::POST, "/jobs/create", Some(job), &[])
        .await;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);
    assert_eq!(created.body["status"], "enqueued");
    let id = created.body["jobId"].as_str().unwrap().to_owned();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let job = c.get(&format!("/jobs/{id}")).await.body;
            if ["completed", "failed", "cancelled"].contains(&job["status"].as_str().unwrap_or(""))
            {
                return job;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap()
}

/// A client for the hub's blob endpoint.
fn blob_client(hub: &EmulatorHandle) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(HubEndpoint::of(hub).tls_config())
        .resolve("localhost", hub.blob_addr())
        .build()
        .unwrap()
}

async fn download(hub: &EmulatorHandle, uri: &str) -> (StatusCode, String) {
    let reply = blob_client(hub).get(uri).send().await.unwrap();
    (reply.status(), reply.text().await.unwrap())
}

async fn upload(hub: &EmulatorHandle, uri: &str, body: String) {
    let reply = blob_client(hub)
        .put(uri)
        .header("x-ms-blob-type", "BlockBlob")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn export_then_import_into_a_fresh_hub_restores_identities_twins_and_configurations() {
    let source = emulator().await;
    let ep = HubEndpoint::of(&source);
    let c = RestClient::new(&ep, "iothubowner");
    let d1 = c.put("/devices/d1", json!({})).await.body;
    c.put(
        "/devices/d2",
        json!({"status": "disabled", "capabilities": {"iotEdge": true}}),
    )
    .await;
    c.put("/devices/d2/modules/m1", json!({})).await;
    c.request(
        Method::PATCH,
        "/twins/d1",
        Some(json!({"tags": {"site": "north"}, "properties": {"desired": {"interval": 5}}})),
        &[],
    )
    .await;
    c.put(
        "/configurations/cfg",
        json!({"id": "cfg", "content": {"deviceContent": {"properties.desired.mode": "eco"}}, "targetCondition": "tags.site='north'", "priority": 1}),
    )
    .await;
    let out = container(&c, "exports").await;
    let job = run_job(&c, json!({"type": "export", "outputBlobContainerUri": out, "excludeKeysInExport": false, "includeConfigurations": true})).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["type"], "export");
    assert!(job["endTimeUtc"].is_string());
    let (status, devices) = download(&source, &blob_uri(&out, "devices.txt")).await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<Value> = devices
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{devices}");
    assert_eq!(lines[0]["id"], "d1");
    assert_eq!(
        lines[0]["authentication"]["symmetricKey"]["primaryKey"],
        d1["authentication"]["symmetricKey"]["primaryKey"]
    );
    assert_eq!(lines[0]["tags"]["site"], "north");
    assert_eq!(lines[0]["properties"]["desired"]["interval"], 5);
    assert!(lines[0]["properties"]["desired"].get("$metadata").is_none());
    assert_eq!(lines[2]["moduleId"], "m1");
    let (_, configurations) = download(&source, &blob_uri(&out, "configurations.txt")).await;
    assert_eq!(configurations.lines().count(), 1);
    let jobs = c.get("/jobs").await.body;
    assert_eq!(jobs.as_array().unwrap().len(), 1);

    // Without keys: blanked.
    let job = run_job(&c, json!({"type": "export", "outputBlobContainerUri": out, "excludeKeysInExport": true, "outputBlobName": "nokeys.txt"})).await;
    assert_eq!(job["status"], "completed");
    let (_, nokeys) = download(&source, &blob_uri(&out, "nokeys.txt")).await;
    let first: Value = serde_json::from_str(nokeys.lines().next().unwrap()).unwrap();
    assert!(first["authentication"]["symmetricKey"]["primaryKey"].is_null());

    // Into a fresh hub.
    let target = emulator().await;
    let tep = HubEndpoint::of(&target);
    let t = RestClient::new(&tep, "iothubowner");
    let input = container(&t, "imports").await;
    upload(&target, &blob_uri(&input, "devices.txt"), devices).await;
    upload(
        &target,
        &blob_uri(&input, "configurations.txt"),
        configurations,
    )
    .await;
    let job = run_job(&t, json!({"type": "import", "inputBlobContainerUri": input, "outputBlobContainerUri": input, "includeConfigurations": true})).await;
    assert_eq!(job["status"], "completed", "{job}");
    let got = t.get("/devices/d1").await.body;
    assert_eq!(
        got["authentication"]["symmetricKey"],
        d1["authentication"]["symmetricKey"]
    );
    let d2 = t.get("/devices/d2").await.body;
    assert_eq!(d2["status"], "disabled");
    assert_eq!(d2["capabilities"]["iotEdge"], true);
    assert_eq!(t.get("/devices/d2/modules/m1").await.status, StatusCode::OK);
    let twin = t.get("/twins/d1").await.body;
    assert_eq!(twin["tags"]["site"], "north");
    assert_eq!(twin["properties"]["desired"]["interval"], 5);
    // The imported configuration applies in the new hub.
    assert_eq!(twin["properties"]["desired"]["mode"], "eco");
    assert_eq!(t.get("/configurations/cfg").await.status, StatusCode::OK);
    let (missing, _) = download(&target, &blob_uri(&input, "importErrors.log")).await;
    assert_eq!(missing, StatusCode::NOT_FOUND, "no errors, no error log");
    source.shutdown().await;
    target.shutdown().await;
}

#[tokio::test]
async fn a_failed_line_is_reported_in_import_errors_and_the_rest_is_applied() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    c.put("/devices/exists", json!({})).await;
    let input = container(&c, "batch").await;
    let lines = [
        json!({"id": "new-1", "importMode": "create"}).to_string(),
        json!({"id": "exists", "importMode": "create"}).to_string(),
        "not json".to_owned(),
        json!({"id": "new-2"}).to_string(),
        json!({"id": "exists", "importMode": "delete"}).to_string(),
        json!({"id": "ghost", "importMode": "updateTwin", "tags": {"a": 1}}).to_string(),
    ];
    upload(&hub, &blob_uri(&input, "devices.txt"), lines.join("\n")).await;
    let job = run_job(
        &c,
        json!({"type": "import", "inputBlobContainerUri": input, "outputBlobContainerUri": input}),
    )
    .await;
    assert_eq!(job["status"], "failed");
    assert!(
        job["failureReason"]
            .as_str()
            .unwrap()
            .contains("importErrors.log"),
        "{job}"
    );
    assert_eq!(c.get("/devices/new-1").await.status, StatusCode::OK);
    assert_eq!(c.get("/devices/new-2").await.status, StatusCode::OK);
    assert_eq!(c.get("/devices/exists").await.status, StatusCode::NOT_FOUND);
    let (status, log) = download(&hub, &blob_uri(&input, "importErrors.log")).await;
    assert_eq!(status, StatusCode::OK);
    let errors: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(errors.len(), 3, "{log}");
    assert_eq!(errors[0]["line"], 3);
    let by_line = |n: u64| errors.iter().find(|e| e["line"] == n).cloned().unwrap();
    assert_eq!(by_line(2)["errorCode"], "DeviceAlreadyExists");
    assert_eq!(by_line(6)["errorCode"], "DeviceNotFound");
    hub.shutdown().await;
}

#[tokio::test]
async fn bad_jobs_are_refused_before_they_exist() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let out = container(&c, "exports").await;
    let foreign = "https://example.com/exports?sv=1&sig=abc".to_owned();
    let tampered = out.replace("sp=rwdl", "sp=rwdlc");
    let read_only = out.replace("exports", "other");
    for job in [
        json!({"type": "export"}),
        json!({"type": "export", "outputBlobContainerUri": foreign}),
        json!({"type": "export", "outputBlobContainerUri": tampered}),
        json!({"type": "export", "outputBlobContainerUri": read_only}),
        json!({"type": "backup", "outputBlobContainerUri": out}),
        json!({"type": "import", "outputBlobContainerUri": out}),
    ] {
        let reply = c
            .request(Method::POST, "/jobs/create", Some(job.clone()), &[])
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{job}: {:?}",
            reply.body
        );
    }
    let identity = c
        .request(Method::POST, "/jobs/create", Some(json!({"type": "export", "outputBlobContainerUri": out, "storageAuthenticationType": "identityBased"})), &[])
        .await;
    assert_eq!(identity.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(c.get("/jobs").await.body, json!([]));
    assert_eq!(c.get("/jobs/nope").await.status, StatusCode::NOT_FOUND);
    let reader = RestClient::new(&ep, "registryRead");
    let refused = reader
        .request(
            Method::POST,
            "/jobs/create",
            Some(json!({"type": "export", "outputBlobContainerUri": out})),
            &[],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // A missing input blob fails the job with the reason.
    let job = run_job(
        &c,
        json!({"type": "import", "inputBlobContainerUri": out, "outputBlobContainerUri": out}),
    )
    .await;
    assert_eq!(job["status"], "failed");
    assert!(
        job["failureReason"]
            .as_str()
            .unwrap()
            .contains("devices.txt"),
        "{job}"
    );
    hub.shutdown().await;
}
