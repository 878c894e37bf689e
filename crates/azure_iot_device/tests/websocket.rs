//! MQTT over WebSockets (`wss://{host}/$iothub/websocket` on the emulator's HTTPS port):
//! the same client, telemetry, twin, C2D and a reconnect after a drop.
#![cfg(feature = "mqtt_ws")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_device::{ClientOptions, ConnectionState, DeviceClient, Message, Transport};
use azure_iot_emulator::Fault;
use azure_iot_test::{HubEndpoint, RestClient, emulator};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn the_client_works_over_websockets_and_reconnects_over_them() {
    let hub = emulator().await;
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let key = service.register_device("ws-dev").await;
    let cs = format!(
        "HostName={};DeviceId=ws-dev;SharedAccessKey={key}",
        hub.hostname()
    );
    let options = ClientOptions::default()
        .trusted_ca_pem(hub.ca_pem())
        .transport(Transport::MqttWebSockets)
        .port(hub.https_addr().port())
        .operation_timeout(WAIT);
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
    client.close().await;
}
