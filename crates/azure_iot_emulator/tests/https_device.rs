//! The device HTTPS API over real TLS: telemetry (single, batch, modules, X.509), C2D polling
//! with ETag lock tokens (complete, reject, abandon), and the hub's refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_core::message::{AckMode, Message};
use azure_iot_test::DeviceHttp as Device;
use azure_iot_test::{HubEndpoint, RestClient, device_token, emulator, http_client};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const HOUR: Duration = Duration::from_secs(3600);

fn etag(response: &reqwest::Response) -> String {
    let raw = response.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        raw.starts_with('"') && raw.ends_with('"'),
        "the C SDK needs a quoted ETag: {raw}"
    );
    raw.trim_matches('"').to_owned()
}

async fn feedback_codes(c: &RestClient) -> Vec<String> {
    let r = c.get("/messages/serviceBound/feedback").await;
    if r.status == StatusCode::NO_CONTENT {
        return Vec::new();
    }
    let token = r.headers["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_owned();
    c.delete(&format!("/messages/serviceBound/feedback/{token}"))
        .await;
    r.body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["statusCode"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn telemetry_carries_header_properties_and_batches_decode() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    let device = Device::new(&ep, "dev1", None, &key);

    let r = device
        .request(Method::POST, "/devices/dev1/messages/events")
        .header("IoTHub-MessageId", "m1")
        .header("iothub-correlationid", "c1")
        .header("iothub-contenttype", "application/json")
        .header("iothub-contentencoding", "utf-8")
        .header("iothub-app-Color", "red")
        .header("Content-Type", "application/octet-stream")
        .body("{\"t\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let batch = json!([
        {"body": "aGVsbG8=", "properties": {"iothub-app-k": "v", "iothub-messageid": "b1"}},
        {"body": "plain text", "base64Encoded": false, "properties": {}}
    ]);
    let r = device
        .request(Method::POST, "/devices/dev1/messages/events")
        .header("Content-Type", "application/vnd.microsoft.iothub.json")
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let events = hub.telemetry(0, 10).await.unwrap();
    assert_eq!(events.len(), 3);
    let first = &events[0].message;
    assert_eq!(first.body().as_ref(), b"{\"t\":1}");
    let s = first.system_properties();
    assert_eq!(s.message_id.as_deref(), Some("m1"));
    assert_eq!(s.correlation_id.as_deref(), Some("c1"));
    assert_eq!(s.content_type.as_deref(), Some("application/json"));
    assert_eq!(s.content_encoding.as_deref(), Some("utf-8"));
    // HTTP/1.1 header names reach the hub in lower case: so do the property names.
    assert_eq!(first.property("color"), Some("red"));
    assert_eq!(
        first.properties().len(),
        1,
        "no Authorization or Host leaks in"
    );
    assert_eq!(events[1].message.body().as_ref(), b"hello");
    assert_eq!(events[1].message.property("k"), Some("v"));
    assert_eq!(
        events[1].message.system_properties().message_id.as_deref(),
        Some("b1")
    );
    assert_eq!(events[2].message.body().as_ref(), b"plain text");
    assert!(events.iter().all(|e| e.device_id == "dev1"));
}

#[tokio::test]
async fn modules_and_x509_devices_send_too() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    c.register_device("dev1").await;
    let r = c.put("/devices/dev1/modules/m1", json!({})).await;
    assert_eq!(r.status, StatusCode::OK);
    let module_key = r.body["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let module = Device::new(&ep, "dev1", Some("m1"), &module_key);
    let r = module
        .request(Method::POST, "/devices/dev1/modules/m1/messages/events")
        .body("from the module")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // A module token does not grant its device.
    let r = module
        .request(Method::POST, "/devices/dev1/messages/events")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let (cert, key, thumbprint) = azure_iot_test::self_signed_device_certificate("x509dev");
    let r = c
        .put(
            "/devices/x509dev",
            json!({"authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": thumbprint, "secondaryThumbprint": null}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(ep.tls_config_with_certificate(vec![cert], key))
        .resolve("localhost", ep.https_addr)
        .build()
        .unwrap();
    let url = |id: &str| {
        format!(
            "https://localhost:{}/devices/{id}/messages/events?api-version=2020-09-30",
            ep.https_addr.port()
        )
    };
    let r = http
        .post(url("x509dev"))
        .body("signed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // The certificate grants only its own device.
    let r = http.post(url("dev1")).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let events = hub.telemetry(0, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].module_id.as_deref(), Some("m1"));
    assert_eq!(events[1].device_id, "x509dev");
}

#[tokio::test]
async fn bad_requests_get_the_hubs_codes() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    let other = c.register_device("dev2").await;
    let device = Device::new(&ep, "dev1", None, &key);
    let send = |path: &str| device.request(Method::POST, path);

    // Another device's token, no token, an unknown device.
    let stranger = Device::new(&ep, "dev2", None, &other);
    let r = stranger
        .request(Method::POST, "/devices/dev1/messages/events")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http_client(&ep)
        .post(format!(
            "https://localhost:{}/devices/dev1/messages/events",
            ep.https_addr.port()
        ))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["iothub-errorcode"], "IotHubUnauthorizedAccess");
    let r = send("/devices/nobody/messages/events")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Over 256 KiB, alone or as a batch.
    let r = send("/devices/dev1/messages/events")
        .body(vec![b'x'; 256 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = send("/devices/dev1/messages/events")
        .header("iothub-app-big", "v".repeat(4096))
        .body(vec![b'x'; 256 * 1024 - 100])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "properties count"
    );
    // A malformed batch.
    let r = send("/devices/dev1/messages/events")
        .header("Content-Type", "application/vnd.microsoft.iothub.json")
        .body("[{\"body\": \"not base64!\"}]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(hub.telemetry(0, 10).await.unwrap().is_empty());

    // Twins and methods are not served to devices over HTTPS.
    let r = device
        .request(Method::GET, "/devices/dev1/twin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED);
    let r = device
        .request(Method::POST, "/devices/dev1/methods/res/200")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED);
}

#[tokio::test]
async fn c2d_polling_completes_rejects_and_abandons_under_etag_locks() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    let device = Device::new(&ep, "dev1", None, &key);

    assert_eq!(
        device.receive("dev1").await.status(),
        StatusCode::NO_CONTENT
    );

    let message = Message::builder("hello device")
        .message_id("c1")
        .correlation_id("corr")
        .ack(AckMode::Full)
        .property("k", "v")
        .build()
        .unwrap();
    hub.send_cloud_to_device("dev1", message).await.unwrap();
    let r = device.receive("dev1").await;
    assert_eq!(r.status(), StatusCode::OK);
    let token = etag(&r);
    let h = r.headers();
    assert_eq!(h["iothub-messageid"], "c1");
    assert_eq!(h["iothub-correlationid"], "corr");
    assert_eq!(h["iothub-app-k"], "v");
    assert_eq!(h["iothub-deliverycount"], "1");
    assert_eq!(h["iothub-ack"], "full");
    assert_eq!(h["iothub-to"], "/devices/dev1/messages/deviceBound");
    assert!(h.contains_key("iothub-sequencenumber"));
    assert!(h.contains_key("iothub-expiry"));
    assert!(h.contains_key("iothub-enqueuedtime"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello device");
    // Locked: nothing else to receive.
    assert_eq!(
        device.receive("dev1").await.status(),
        StatusCode::NO_CONTENT
    );

    // A wrong token, and an If-Match naming another token: 412, nothing changes.
    let path = |t: &str| format!("/devices/dev1/messages/devicebound/{t}");
    let wrong = "00000000-0000-4000-8000-000000000000";
    let r = device
        .request(Method::DELETE, &path(wrong))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    // Over HTTPS the hub's name for it is PreconditionFailed (412001), not the AMQP/MQTT
    // DeviceMessageLockLost.
    assert_eq!(r.headers()["iothub-errorcode"], "PreconditionFailed");
    let r = device
        .request(Method::DELETE, &path(&token))
        .header("If-Match", format!("\"{wrong}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    // Another device cannot settle it with its own credentials.
    let other_key = c.register_device("dev2").await;
    let other = Device::new(&ep, "dev2", None, &other_key);
    let r = other
        .request(
            Method::DELETE,
            &format!("/devices/dev2/messages/devicebound/{token}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);

    // Abandon (C# spelling, quoted If-Match): delivered again with the next count, and the
    // old token is stale.
    let r = device
        .request(
            Method::POST,
            &format!("/devices/dev1/messages/deviceBound/{token}/abandon"),
        )
        .header("If-Match", format!("\"{token}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = device.receive("dev1").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["iothub-deliverycount"], "2");
    let second = etag(&r);
    assert_ne!(second, token);
    let r = device
        .request(Method::DELETE, &path(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);

    // Complete (Node sends If-Match unquoted): done, and completing again is 412.
    let r = device
        .request(Method::DELETE, &path(&second))
        .header("If-Match", second.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = device
        .request(Method::DELETE, &path(&second))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);

    // Reject (`?reject`, bare): dead-lettered.
    let message = Message::builder("no")
        .message_id("c2")
        .ack(AckMode::Full)
        .build()
        .unwrap();
    hub.send_cloud_to_device("dev1", message).await.unwrap();
    let r = device.receive("dev1").await;
    let third = etag(&r);
    let r = device
        .request(Method::DELETE, &format!("{}?reject", path(&third)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        device.receive("dev1").await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(feedback_codes(&c).await, ["Success", "Rejected"]);
    assert_eq!(
        c.get("/devices/dev1").await.body["cloudToDeviceMessageCount"],
        Value::from(0)
    );
}

#[tokio::test]
async fn an_https_request_does_not_replace_the_devices_mqtt_connection() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    let token = device_token(&ep, "dev1", None, &key, HOUR);
    let (mut mqtt, _) = azure_iot_test::MqttClient::connect(&ep, "dev1", &token, true, 60).await;
    let device = Device::new(&ep, "dev1", None, &key);
    let r = device
        .request(Method::POST, "/devices/dev1/messages/events")
        .body("over https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // The MQTT connection still works: its publish is acknowledged.
    let pkid = mqtt
        .publish(
            "devices/dev1/messages/events/",
            "over mqtt",
            azure_iot_protocol::mqtt::codec::QoS::AtLeastOnce,
        )
        .await;
    match mqtt.recv().await {
        Some(azure_iot_protocol::mqtt::codec::Packet::PubAck(ack)) => assert_eq!(ack.pkid, pkid),
        other => panic!("expected a PUBACK, got {other:?}"),
    }
    assert_eq!(hub.telemetry(0, 10).await.unwrap().len(), 2);
}
