//! The device client over HTTPS (`Transport::Https`) against the emulator's device REST API,
//! over real TLS: telemetry with properties, batches, cloud-to-device messages by polling
//! with all three outcomes, what HTTPS cannot do, and a refused key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_device::{ClientOptions, DeviceClient, ErrorKind, Message, Transport};
use azure_iot_emulator::EmulatorHandle;
use azure_iot_test::{HubEndpoint, RestClient, emulator};

const WAIT: Duration = Duration::from_secs(10);

fn https(hub: &EmulatorHandle) -> ClientOptions {
    ClientOptions::default()
        .trusted_ca_pem(hub.ca_pem())
        .transport(Transport::Https)
        .port(hub.https_addr().port())
        .https_poll_interval(Duration::from_secs(1))
        .operation_timeout(WAIT)
}

async fn device(hub: &EmulatorHandle, id: &str) -> DeviceClient {
    let service = RestClient::new(&HubEndpoint::of(hub), "iothubowner");
    let key = service.register_device(id).await;
    let cs = format!(
        "HostName={};DeviceId={id};SharedAccessKey={key}",
        hub.hostname()
    );
    DeviceClient::from_connection_string(&cs, https(hub))
        .await
        .unwrap()
}

#[tokio::test]
async fn telemetry_and_batches_over_https() {
    let hub = emulator().await;
    let client = device(&hub, "web-1").await;
    let message = Message::builder(r#"{"t":21.5}"#)
        .message_id("m-1")
        .correlation_id("c-1")
        .content_type("application/json")
        .content_encoding("utf-8")
        .property("level", "high")
        .build()
        .unwrap();
    client.send_event(message).await.unwrap();
    let batch: Vec<Message> = (0..3)
        .map(|i| {
            Message::builder(format!("b{i}"))
                .property("i", i.to_string())
                .build()
                .unwrap()
        })
        .collect();
    client.send_event_batch(batch).await.unwrap();

    let logged = hub.telemetry(0, 100).await.unwrap();
    assert_eq!(logged.len(), 4);
    let first = &logged[0].message;
    assert_eq!(first.body().as_ref(), br#"{"t":21.5}"#);
    let system = first.system_properties();
    assert_eq!(system.message_id.as_deref(), Some("m-1"));
    assert_eq!(system.correlation_id.as_deref(), Some("c-1"));
    assert_eq!(system.content_type.as_deref(), Some("application/json"));
    assert_eq!(system.content_encoding.as_deref(), Some("utf-8"));
    assert_eq!(first.property("level"), Some("high"));
    for (i, entry) in logged[1..].iter().enumerate() {
        assert_eq!(entry.message.body().as_ref(), format!("b{i}").as_bytes());
        assert_eq!(entry.message.property("i"), Some(i.to_string().as_str()));
    }
    client.close().await;
    hub.shutdown().await;
}

async fn next(
    messages: &mut azure_iot_device::Incoming<azure_iot_device::ReceivedMessage>,
) -> azure_iot_device::ReceivedMessage {
    tokio::time::timeout(WAIT, messages.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn cloud_to_device_messages_are_polled_and_settled_three_ways() {
    let hub = emulator().await;
    let client = device(&hub, "web-2").await;
    for body in ["one", "two", "three"] {
        hub.send_cloud_to_device("web-2", Message::new(body).unwrap())
            .await
            .unwrap();
    }
    let mut messages = client
        .cloud_to_device_messages_with_settlement()
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut abandoned = false;
    while seen.len() < 3 {
        let mut m = next(&mut messages).await;
        let body = String::from_utf8(m.message().body().to_vec()).unwrap();
        match body.as_str() {
            "one" if !abandoned => {
                abandoned = true;
                m.abandon().await.unwrap();
                continue;
            }
            "two" => m.reject().await.unwrap(),
            _ => m.complete().await.unwrap(),
        }
        seen.push(body);
    }
    seen.sort();
    assert_eq!(seen, ["one", "three", "two"]);
    // Closing sends every settlement still on its way: then the hub's queue is empty.
    client.close().await;
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    assert_eq!(
        service.get("/devices/web-2").await.body["cloudToDeviceMessageCount"],
        0,
        "a settled message stayed in the device's queue"
    );
    // Nothing is left: a message sent now is the next one a new client receives.
    hub.send_cloud_to_device("web-2", Message::new("sentinel").unwrap())
        .await
        .unwrap();
    let key =
        service.get("/devices/web-2").await.body["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap()
            .to_owned();
    let cs = format!(
        "HostName={};DeviceId=web-2;SharedAccessKey={key}",
        hub.hostname()
    );
    let client = DeviceClient::from_connection_string(&cs, https(&hub))
        .await
        .unwrap();
    let mut messages = client
        .cloud_to_device_messages_with_settlement()
        .await
        .unwrap();
    let last = next(&mut messages).await;
    assert_eq!(last.message().body().as_ref(), b"sentinel");
    last.complete().await.unwrap();
    client.close().await;
    hub.shutdown().await;
}

#[tokio::test]
async fn what_https_cannot_do_and_a_refused_key() {
    let hub = emulator().await;
    let client = device(&hub, "web-3").await;
    let twin = client.get_twin().await.unwrap_err();
    assert_eq!(twin.kind(), ErrorKind::Unsupported, "{twin}");
    let methods = client.method_requests().await.unwrap_err();
    assert_eq!(methods.kind(), ErrorKind::Unsupported, "{methods}");
    // The client still works after them.
    client
        .send_event(Message::new("still here").unwrap())
        .await
        .unwrap();
    client.close().await;

    // HTTPS holds no connection: a wrong key is refused at the first request.
    let cs = format!(
        "HostName={};DeviceId=web-3;SharedAccessKey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        hub.hostname()
    );
    let wrong = DeviceClient::from_connection_string(&cs, https(&hub))
        .await
        .unwrap();
    let e = wrong
        .send_event(Message::new("x").unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    assert!(!e.to_string().contains("sig="), "{e}");
    wrong.close().await;
    assert_eq!(hub.telemetry(0, 100).await.unwrap().len(), 1);
    hub.shutdown().await;
}

/// Requests over HTTPS, file upload included, tunnel through the client's proxy.
#[tokio::test]
async fn https_goes_through_an_http_connect_proxy() {
    let hub = emulator().await;
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let key = service.register_device("web-4").await;
    let cs = format!(
        "HostName={};DeviceId=web-4;SharedAccessKey={key}",
        hub.hostname()
    );
    let (address, mut heads) = azure_iot_test::connect_proxy(
        hub.https_addr(),
        "HTTP/1.1 200 Connection established\r\n\r\n",
    )
    .await;
    let proxy = azure_iot_device::Proxy::new("127.0.0.1", address.port()).basic_auth("bob", "pw");
    let client = DeviceClient::from_connection_string(&cs, https(&hub).proxy(proxy))
        .await
        .unwrap();
    client
        .send_event(Message::new("tunnelled").unwrap())
        .await
        .unwrap();
    let head = heads.recv().await.unwrap();
    let port = hub.https_addr().port();
    assert!(
        head.starts_with(&format!("CONNECT localhost:{port} HTTP/1.1\r\n")),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("proxy-authorization: basic ym9ionb3"),
        "bob:pw in Basic form: {head}"
    );
    assert_eq!(
        hub.telemetry(0, 10).await.unwrap()[0]
            .message
            .body()
            .as_ref(),
        b"tunnelled"
    );
    client.close().await;
    hub.shutdown().await;
}

#[tokio::test]
async fn many_devices_share_one_http_client() {
    use azure_iot_device::net::{Dial, http_client, tls_config};
    let hub = emulator().await;
    // Only the shared client trusts the emulator's CA: a device that built its own client
    // (from options without `trusted_ca_pem`) could not reach the hub.
    let port = hub.https_addr().port();
    let dial = Dial::new(
        tls_config(Some(hub.ca_pem()), None).unwrap(),
        hub.hostname(),
        port,
        Transport::Https,
        None,
    );
    let shared = http_client(&dial, WAIT).unwrap();
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let mut clients = Vec::new();
    for i in 0..5 {
        let id = format!("pooled-{i}");
        let key = service.register_device(&id).await;
        let cs = format!(
            "HostName={};DeviceId={id};SharedAccessKey={key}",
            hub.hostname()
        );
        let options = ClientOptions::default()
            .transport(Transport::Https)
            .port(port)
            .operation_timeout(WAIT)
            .http_client(shared.clone());
        clients.push(
            DeviceClient::from_connection_string(&cs, options)
                .await
                .unwrap(),
        );
    }
    let sends = clients
        .iter()
        .enumerate()
        .map(|(i, c)| c.send_event(Message::new(format!("from {i}")).unwrap()));
    for sent in futures_util::future::join_all(sends).await {
        sent.unwrap();
    }
    let logged = hub.telemetry(0, 100).await.unwrap();
    assert_eq!(logged.len(), 5);
    for client in clients {
        client.close().await;
    }
    hub.shutdown().await;
}
