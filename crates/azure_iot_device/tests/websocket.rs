//! MQTT over WebSockets (`wss://{host}/$iothub/websocket` on the emulator's HTTPS port):
//! the same client, telemetry, twin, C2D and a reconnect after a drop.
#![cfg(feature = "mqtt_ws")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_device::{ClientOptions, ConnectionState, DeviceClient, Message, Transport};
use azure_iot_emulator::Fault;
use azure_iot_test::{HubEndpoint, RestClient, emulator};

const WAIT: Duration = Duration::from_secs(10);

/// Options for MQTT over WebSockets to the in-process emulator's HTTPS port.
fn ws_options(hub: &azure_iot_emulator::EmulatorHandle) -> ClientOptions {
    ClientOptions::default()
        .trusted_ca_pem(hub.ca_pem())
        .transport(Transport::MqttWebSockets)
        .port(hub.https_addr().port())
        .operation_timeout(WAIT)
}

#[tokio::test]
async fn the_client_works_over_websockets_and_reconnects_over_them() {
    let hub = emulator().await;
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let key = service.register_device("ws-dev").await;
    let cs = format!(
        "HostName={};DeviceId=ws-dev;SharedAccessKey={key}",
        hub.hostname()
    );
    let options = ws_options(&hub);
    let client = DeviceClient::from_connection_string(&cs, options)
        .await
        .unwrap();

    client
        .send_event(Message::new("over ws").unwrap())
        .await
        .unwrap();
    let logged = hub.telemetry(0, 10).await.unwrap();
    assert_eq!(logged[0].message.body().as_ref(), b"over ws");
    let version = client
        .update_reported_properties(&serde_json::json!({"via": "ws"}))
        .await
        .unwrap();
    assert_eq!(version, 2);
    let mut messages = client.cloud_to_device_messages().await.unwrap();

    // A drop closes the WebSocket; the client comes back over a new one.
    let mut state = client.watch_connection_state();
    state.mark_unchanged();
    hub.inject(Fault::DropConnection {
        device_id: "ws-dev".into(),
        module_id: None,
    })
    .await
    .unwrap();
    tokio::time::timeout(WAIT, state.wait_for(|s| *s != ConnectionState::Connected))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, state.wait_for(|s| *s == ConnectionState::Connected))
        .await
        .unwrap()
        .unwrap();
    hub.send_cloud_to_device("ws-dev", Message::new("c2d over ws").unwrap())
        .await
        .unwrap();
    let m = tokio::time::timeout(WAIT, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.body().as_ref(), b"c2d over ws");
    client
        .send_event(Message::new("after").unwrap())
        .await
        .unwrap();

    // Desired patches and direct methods over WebSockets too.
    let mut patches = client.desired_property_patches().await.unwrap();
    let mut calls = client.method_requests().await.unwrap();
    let patched = service
        .request(
            reqwest::Method::PATCH,
            "/twins/ws-dev",
            Some(serde_json::json!({"properties": {"desired": {"mode": "ws"}}})),
            &[],
        )
        .await;
    assert_eq!(
        patched.status,
        reqwest::StatusCode::OK,
        "{:?}",
        patched.body
    );
    let patch = tokio::time::timeout(WAIT, patches.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(patch.patch["mode"], "ws");
    let invoke = {
        let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
        tokio::spawn(async move {
            service
                .request(
                    reqwest::Method::POST,
                    "/twins/ws-dev/methods",
                    Some(serde_json::json!({"methodName": "ping", "payload": 1, "responseTimeoutInSeconds": 10})),
                    &[],
                )
                .await
        })
    };
    let call = tokio::time::timeout(WAIT, calls.recv())
        .await
        .unwrap()
        .unwrap();
    client
        .respond_to_method(azure_iot_device::MethodResponse::new(
            call.request_id,
            200,
            serde_json::json!("pong"),
        ))
        .await
        .unwrap();
    let answer = invoke.await.unwrap();
    assert_eq!(answer.body["payload"], "pong");
    client.close().await;
}

#[tokio::test]
async fn websockets_go_through_an_http_connect_proxy_with_basic_auth() {
    let hub = emulator().await;
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let key = service.register_device("proxied").await;
    let cs = format!(
        "HostName={};DeviceId=proxied;SharedAccessKey={key}",
        hub.hostname()
    );
    let (address, mut heads) = azure_iot_test::connect_proxy(
        hub.https_addr(),
        "HTTP/1.1 200 Connection established\r\n\r\n",
    )
    .await;
    let proxy =
        azure_iot_device::Proxy::from_url(&format!("http://alice:s%40cret@{address}")).unwrap();
    let options = ws_options(&hub).proxy(proxy);
    let client = DeviceClient::from_connection_string(&cs, options)
        .await
        .unwrap();
    client
        .send_event(Message::new("through the proxy").unwrap())
        .await
        .unwrap();
    assert_eq!(
        hub.telemetry(0, 10).await.unwrap()[0]
            .message
            .body()
            .as_ref(),
        b"through the proxy"
    );
    let head = heads.recv().await.unwrap();
    let port = hub.https_addr().port();
    assert!(
        head.starts_with(&format!("CONNECT localhost:{port} HTTP/1.1\r\n")),
        "{head}"
    );
    // alice:s@cret, decoded from the URL, in Basic form.
    assert!(
        head.contains("Proxy-Authorization: Basic YWxpY2U6c0BjcmV0\r\n"),
        "{head}"
    );
    client.close().await;

    // A proxy that wants other credentials: the connect fails, saying so, without the password.
    let (address, _heads) = azure_iot_test::connect_proxy(
        hub.https_addr(),
        "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
    )
    .await;
    let refused = DeviceClient::from_connection_string(
        &cs,
        ws_options(&hub)
            .retry_policy(azure_iot_core::NoRetry)
            .proxy(
                azure_iot_device::Proxy::new("127.0.0.1", address.port())
                    .basic_auth("alice", "wrong-pass"),
            ),
    )
    .await
    .unwrap_err();
    assert_eq!(
        refused.kind(),
        azure_iot_device::ErrorKind::Unauthorized,
        "{refused}"
    );
    assert!(refused.to_string().contains("407"), "{refused}");
    assert!(!refused.to_string().contains("wrong-pass"));

    // A proxy that ends its answer's lines with a bare LF is understood.
    let (address, _heads) =
        azure_iot_test::connect_proxy(hub.https_addr(), "HTTP/1.0 200 OK\n\n").await;
    let lf = DeviceClient::from_connection_string(
        &cs,
        ws_options(&hub).proxy(azure_iot_device::Proxy::new("127.0.0.1", address.port())),
    )
    .await
    .unwrap();
    lf.close().await;

    // A host name that would add lines to the CONNECT request is refused before it is sent.
    let (address, mut heads) =
        azure_iot_test::connect_proxy(hub.https_addr(), "HTTP/1.1 200 OK\r\n\r\n").await;
    let injected = DeviceClient::from_connection_string(
        &format!("HostName=hub.example\r\nX-Injected: yes;DeviceId=proxied;SharedAccessKey={key}"),
        ClientOptions::default()
            .transport(Transport::MqttWebSockets)
            .operation_timeout(WAIT)
            .retry_policy(azure_iot_core::NoRetry)
            .proxy(azure_iot_device::Proxy::new("127.0.0.1", address.port())),
    )
    .await;
    if let Err(e) = &injected {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
    assert!(injected.is_err());
    assert!(heads.try_recv().is_err(), "nothing reached the proxy");
    hub.shutdown().await;
}
