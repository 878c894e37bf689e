//! File upload end to end over real TLS: the hub's SAS answer, the blob endpoint on its own
//! port (Put Blob, Put Block + Put Block List, Get Blob, Get Blob Properties, Delete Blob,
//! SAS checks), the completion notification, and listing and downloading uploaded files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use azure_iot_test::{DeviceHttp, HubEndpoint, RestClient, emulator, http_client};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn setup() -> (
    azure_iot_emulator::EmulatorHandle,
    HubEndpoint,
    RestClient,
    DeviceHttp,
) {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    let device = DeviceHttp::new(&ep, "dev1", None, &key);
    (hub, ep, c, device)
}

fn error_code(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-ms-error-code")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_hub_hands_out_a_sas_for_its_blob_endpoint_and_blocks_commit_in_order() {
    let (hub, ep, c, device) = setup().await;
    let info = device.start_upload("dev1", "logs/today.txt").await;
    assert_eq!(info["blobName"], "dev1/logs/today.txt");
    assert_eq!(info["containerName"], "fileuploads");
    assert_eq!(
        info["hostName"],
        format!("localhost:{}", hub.blob_addr().port()),
        "the port is in hostName, so https://{{hostName}}/... reaches the blob endpoint"
    );
    let sas = info["sasToken"].as_str().unwrap();
    assert!(sas.starts_with("?sv=") && sas.contains("sig="), "{sas}");
    assert!(
        info["correlationId"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );

    // The C SDK's way: the blob name's `/` encoded, blocks, then the block list.
    let base = format!(
        "https://{}/{}/dev1%2Flogs%2Ftoday.txt{}",
        info["hostName"].as_str().unwrap(),
        info["containerName"].as_str().unwrap(),
        sas
    );
    let http = http_client(&ep);
    for (id, part) in [("MDAwMDAw", "hello "), ("MDAwMDAx", "world")] {
        let r = http
            .put(format!("{base}&comp=block&blockid={id}"))
            .body(part)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        assert!(r.headers().contains_key("x-ms-request-id"));
        assert!(r.headers().contains_key("x-ms-version"));
    }
    let list = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<BlockList><Latest>MDAwMDAw</Latest><Latest>MDAwMDAx</Latest></BlockList>";
    let r = http
        .put(format!("{base}&comp=blocklist"))
        .body(list)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().contains_key("etag"));
    assert!(r.headers().contains_key("last-modified"));

    // Read back through the SDKs' URL (raw `/`), properties and content.
    let url = DeviceHttp::blob_url(&info);
    let r = http.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "11");
    assert_eq!(r.headers()["x-ms-blob-type"], "BlockBlob");
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello world");
    // One range, as the storage SDKs read (an end past the blob is cut to it).
    let r = http
        .get(&url)
        .header("x-ms-range", "bytes=6-100")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 6-10/11");
    assert_eq!(r.text().await.unwrap(), "world");
    let r = http
        .get(&url)
        .header("x-ms-range", "bytes=11-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    assert_eq!(
        device.notify_upload("dev1", &info, true).await,
        StatusCode::NO_CONTENT
    );
    // Ended: a second notification for the same id is refused.
    assert_eq!(
        device.notify_upload("dev1", &info, true).await,
        StatusCode::BAD_REQUEST
    );

    // The service side lists and downloads it.
    let files = c.get("/$emulator/files").await;
    assert_eq!(files.status, StatusCode::OK);
    assert_eq!(files.body[0]["name"], "dev1/logs/today.txt");
    assert_eq!(files.body[0]["size"], 11);
    let r = http
        .get(format!(
            "https://localhost:{}/$emulator/files/dev1/logs/today.txt",
            ep.https_addr.port()
        ))
        .header("Authorization", c.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "hello world");
    // A device token does not list files.
    let r = device
        .request(Method::GET, "/$emulator/files")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_blob_endpoint_refuses_bad_sas_and_bad_input_and_leaves_nothing_half_written() {
    let (_hub, ep, _c, device) = setup().await;
    let http = http_client(&ep);
    let info = device.start_upload("dev1", "a.bin").await;
    let url = DeviceHttp::blob_url(&info);
    let put = |url: String| {
        http.put(url)
            .header("x-ms-blob-type", "BlockBlob")
            .body("data")
    };

    // No SAS, an altered one, one for another blob.
    let bare = url.split('?').next().unwrap().to_owned();
    let r = put(bare.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(&r), "AuthenticationFailed");
    let r = put(url.replace("sp=rw", "sp=rwd")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let other = url.replace("/dev1/a.bin", "/dev1/b.bin");
    let r = put(other).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(&r), "AuthenticationFailed");
    // The device's SAS does not allow deleting.
    let r = http.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(&r), "AuthorizationPermissionMismatch");
    // Put Blob needs the blob type; a block list naming a missing block is refused.
    let r = http.put(&url).body("data").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = http
        .put(format!("{url}&comp=blocklist"))
        .body("<BlockList><Latest>bm9uZQ==</Latest></BlockList>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r), "InvalidBlockList");
    // Nothing of that is visible.
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(&r), "BlobNotFound");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("xml")
    );

    // A good Put Blob; If-None-Match: * then refuses to overwrite it.
    assert_eq!(
        put(url.clone()).send().await.unwrap().status(),
        StatusCode::CREATED
    );
    let r = put(url.clone())
        .header("If-None-Match", "*")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // The hub: a notification for an unknown correlation id, and a bad step-1 body.
    let bogus = json!({"correlationId": "nope"});
    assert_eq!(
        device.notify_upload("dev1", &bogus, true).await,
        StatusCode::BAD_REQUEST
    );
    let r = device
        .request(Method::POST, "/devices/dev1/files")
        .json(&json!({"blobName": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = device
        .request(Method::POST, "/devices/dev1/files")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_device_may_have_ten_uploads_in_progress_and_node_names_the_id_in_the_path() {
    let (_hub, _ep, _c, device) = setup().await;
    let mut started: Vec<Value> = Vec::new();
    for i in 0..10 {
        started.push(device.start_upload("dev1", &format!("f{i}")).await);
    }
    let r = device
        .request(Method::POST, "/devices/dev1/files/")
        .json(&json!({"blobName": "eleventh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.headers()["iothub-errorcode"],
        "DeviceMaximumActiveFileUploadLimitExceeded"
    );
    // Node: the id in the path, not in the body; a failed upload ends it too.
    let id = started[0]["correlationId"].as_str().unwrap();
    let r = device
        .request(
            Method::POST,
            &format!("/devices/dev1/files/notifications/{id}"),
        )
        .json(&json!({"isSuccess": false, "statusCode": 500, "statusDescription": "gave up"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    device.start_upload("dev1", "room again").await;
}

#[tokio::test]
async fn hub_json_lists_the_blob_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let hub = azure_iot_emulator::Emulator::builder()
        .data_dir(dir.path())
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .start()
        .await
        .unwrap();
    let text = std::fs::read_to_string(dir.path().join("hub.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let port = hub.blob_addr().port();
    assert_eq!(doc["ports"]["blob"], port);
    assert_eq!(doc["blob"]["endpoint"], format!("https://localhost:{port}"));
    assert_eq!(doc["blob"]["container"], "fileuploads");
    hub.shutdown().await;
}

/// An upload whose connection drops mid-body leaves nothing visible and no partial file, and
/// the endpoint keeps serving: the retried upload succeeds.
#[tokio::test]
async fn a_dropped_upload_leaves_nothing_behind() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let hub = azure_iot_emulator::Emulator::builder()
        .data_dir(dir.path())
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .start()
        .await
        .unwrap();
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    let device = DeviceHttp::new(&ep, "dev1", None, &key);
    let info = device.start_upload("dev1", "cut.bin").await;
    let url = DeviceHttp::blob_url(&info);
    let path = url
        .split_once(&format!(":{}", hub.blob_addr().port()))
        .unwrap()
        .1;

    let mut raw = azure_iot_test::tls_connect(&ep, hub.blob_addr())
        .await
        .unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nx-ms-blob-type: BlockBlob\r\nContent-Length: 100000\r\n\r\n"
    );
    raw.write_all(head.as_bytes()).await.unwrap();
    raw.write_all(&[7u8; 5000]).await.unwrap();
    raw.flush().await.unwrap();
    drop(raw);

    // The handler notices the broken body and removes its partial file.
    let tmp = dir.path().join("blob-store").join("tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_dir(&tmp).unwrap().next().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "a partial upload is still in {}",
            tmp.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let http = http_client(&ep);
    assert_eq!(
        http.get(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let r = http
        .put(&url)
        .header("x-ms-blob-type", "BlockBlob")
        .body(vec![7u8; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = http.head(&url).send().await.unwrap();
    assert_eq!(r.headers()["content-length"], "100000");
    hub.shutdown().await;
}
