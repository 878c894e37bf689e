//! The device client over AMQP and AMQP over WebSockets against the in-process emulator, over
//! real TLS: every feature, settlement by all three outcomes, batches, token renewal on the
//! live connection, reconnects, and many devices multiplexed on pooled connections.
#![cfg(feature = "amqp")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_device::{
    AmqpPool, ClientOptions, ConnectionState, DeviceClient, ErrorKind, MAX_DEVICES_PER_CONNECTION,
    Message, MethodResponse, ModuleClient, Transport,
};
use azure_iot_emulator::{EmulatorHandle, Fault};
use azure_iot_test::{HubEndpoint, RestClient, emulator};

const WAIT: Duration = Duration::from_secs(10);

fn amqp_options(hub: &EmulatorHandle) -> ClientOptions {
    ClientOptions::default()
        .trusted_ca_pem(hub.ca_pem())
        .transport(Transport::Amqp)
        .port(hub.amqp_addr().port())
        .operation_timeout(WAIT)
}

async fn device(hub: &EmulatorHandle, id: &str, options: ClientOptions) -> DeviceClient {
    let service = RestClient::new(&HubEndpoint::of(hub), "iothubowner");
    let key = service.register_device(id).await;
    let cs = format!(
        "HostName={};DeviceId={id};SharedAccessKey={key}",
        hub.hostname()
    );
    DeviceClient::from_connection_string(&cs, options)
        .await
        .unwrap()
}

#[tokio::test]
async fn telemetry_twin_and_methods_over_amqp() {
    let hub = emulator().await;
    let client = device(&hub, "amqp-dev", amqp_options(&hub)).await;

    let message = Message::builder("hello amqp")
        .message_id("m-1")
        .property("kind", "greeting")
        .content_type("text/plain")
        .build()
        .unwrap();
    client.send_event(message).await.unwrap();
    let logged = hub.telemetry(0, 10).await.unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].message.body().as_ref(), b"hello amqp");
    assert_eq!(
        logged[0].message.system_properties().message_id.as_deref(),
        Some("m-1")
    );
    assert_eq!(logged[0].message.property("kind"), Some("greeting"));

    // A batch is stored whole.
    let batch = (0..5)
        .map(|i| Message::new(format!("b{i}")).unwrap())
        .collect();
    client.send_event_batch(batch).await.unwrap();
    let logged = hub.telemetry(0, 10).await.unwrap();
    assert_eq!(logged.len(), 6);
    assert_eq!(logged[5].message.body().as_ref(), b"b4");

    // The twin: reported patch, read back, desired patch.
    let version = client
        .update_reported_properties(&serde_json::json!({"fw": "1.0"}))
        .await
        .unwrap();
    assert!(version >= 2);
    let twin = client.get_twin().await.unwrap();
    assert_eq!(twin.reported["fw"], "1.0");
    let mut patches = client.desired_property_patches().await.unwrap();
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let patched = service
        .request(
            reqwest::Method::PATCH,
            "/twins/amqp-dev",
            Some(serde_json::json!({"properties": {"desired": {"rate": 5}}})),
            &[],
        )
        .await;
    assert!(patched.status.is_success(), "{patched:?}");
    let patch = tokio::time::timeout(WAIT, patches.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(patch.patch["rate"], 5);

    // A direct method, answered.
    let mut calls = client.method_requests().await.unwrap();
    let answered =
        service.invoke_method("/twins/amqp-dev", "reboot", serde_json::json!({"delay": 1}));
    let call = tokio::time::timeout(WAIT, calls.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.name, "reboot");
    assert_eq!(call.payload["delay"], 1);
    client
        .respond_to_method(MethodResponse::new(
            call.request_id,
            201,
            serde_json::json!({"ok": true}),
        ))
        .await
        .unwrap();
    let answer = answered.await.unwrap();
    assert_eq!(answer.body["status"], 201, "{:?}", answer.body);
    assert_eq!(answer.body["payload"]["ok"], true);

    // An answer to a call nobody made is refused here.
    let stray = client
        .respond_to_method(MethodResponse::new("nope", 200, serde_json::Value::Null))
        .await
        .unwrap_err();
    assert_eq!(stray.kind(), ErrorKind::InvalidArgument, "{stray}");
    client.close().await;
}

#[tokio::test]
async fn cloud_to_device_messages_are_completed_abandoned_or_rejected() {
    let hub = emulator().await;
    let client = device(&hub, "c2d-dev", amqp_options(&hub)).await;
    let mut messages = client
        .cloud_to_device_messages_with_settlement()
        .await
        .unwrap();
    for body in ["one", "two", "three"] {
        hub.send_cloud_to_device("c2d-dev", Message::new(body).unwrap())
            .await
            .unwrap();
    }
    // Abandoned: delivered again (after the others, or first, as the queue says).
    let mut first = next(&mut messages).await;
    assert_eq!(first.message().body().as_ref(), b"one");
    first.abandon().await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut m = next(&mut messages).await;
        let body = String::from_utf8(m.message().body().to_vec()).unwrap();
        if body == "two" {
            m.reject().await.unwrap();
        } else {
            m.complete().await.unwrap();
        }
        seen.push(body);
    }
    seen.sort();
    assert_eq!(seen, ["one", "three", "two"]);
    // Nothing is left: the rejected one is dead-lettered, the others completed. A message
    // sent now is the next one delivered (one redelivered would come first: it was queued
    // earlier, and the hub delivers one at a time, each after the previous one's outcome).
    hub.send_cloud_to_device("c2d-dev", Message::new("sentinel").unwrap())
        .await
        .unwrap();
    let last = next(&mut messages).await;
    assert_eq!(last.message().body().as_ref(), b"sentinel");
    last.complete().await.unwrap();
    client.close().await;
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
async fn amqp_over_websockets() {
    let hub = emulator().await;
    let options = ClientOptions::default()
        .trusted_ca_pem(hub.ca_pem())
        .transport(Transport::AmqpWebSockets)
        .port(hub.https_addr().port())
        .operation_timeout(WAIT);
    let client = device(&hub, "ws-amqp", options).await;
    client
        .send_event(Message::new("over amqp-ws").unwrap())
        .await
        .unwrap();
    let logged = hub.telemetry(0, 10).await.unwrap();
    assert_eq!(logged[0].message.body().as_ref(), b"over amqp-ws");
    let twin = client.get_twin().await.unwrap();
    assert!(twin.desired.is_object());
    client.close().await;
}

#[tokio::test]
async fn a_dropped_connection_comes_back_and_sends_go_on() {
    let hub = emulator().await;
    let client = device(&hub, "drop-dev", amqp_options(&hub)).await;
    let mut messages = client.cloud_to_device_messages().await.unwrap();
    let mut state = client.watch_connection_state();
    state.mark_unchanged();
    hub.inject(Fault::DropConnection {
        device_id: "drop-dev".into(),
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
    client
        .send_event(Message::new("after the drop").unwrap())
        .await
        .unwrap();
    // The C2D link was attached again on the new connection.
    hub.send_cloud_to_device("drop-dev", Message::new("still here").unwrap())
        .await
        .unwrap();
    let m = tokio::time::timeout(WAIT, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.body().as_ref(), b"still here");
    client.close().await;
}

/// A TCP relay to `target` that counts the connections made through it.
async fn counting_proxy(
    target: std::net::SocketAddr,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let (port, count, _cut) = relay(target).await;
    (port, count)
}

/// A TCP relay to `target`: its port, how many connections were made through it, and a
/// switch that cuts every connection open now (as a network failure would; new ones are
/// still relayed).
async fn relay(
    target: std::net::SocketAddr,
) -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::sync::watch::Sender<u32>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    let (cut, cuts) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut cuts = cuts.clone();
            cuts.mark_unchanged();
            tokio::spawn(async move {
                let mut hub = tokio::net::TcpStream::connect(target).await.unwrap();
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut hub) => {}
                    // A relay whose switch was dropped is never cut.
                    () = async {
                        if cuts.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    } => {}
                }
            });
        }
    });
    (port, count, cut)
}

/// The token is renewed on the live connection (CBS put-token) before it expires: with
/// sends and twin reads in flight throughout, none fails and the client never reports a
/// disconnection.
#[tokio::test]
async fn the_token_is_renewed_without_reconnecting() {
    let hub = emulator().await;
    let (port, connections) = counting_proxy(hub.amqp_addr()).await;
    let options = amqp_options(&hub)
        .port(port)
        .token_ttl(Duration::from_secs(3));
    let client = device(&hub, "renew-dev", options).await;
    let mut state = client.watch_connection_state();
    state.mark_unchanged();
    let started = tokio::time::Instant::now();
    let mut sent = 0;
    // Three token lifetimes: without renewal the hub would close the connection at 3 s.
    while started.elapsed() < Duration::from_secs(8) {
        let batch: Vec<_> = (0..10)
            .map(|i| {
                let client = client.clone();
                async move {
                    client
                        .send_event(Message::new(format!("m{i}")).unwrap())
                        .await
                }
            })
            .collect();
        for result in futures_util::future::join_all(batch).await {
            result.unwrap();
            sent += 1;
        }
        // A twin round trip between batches: the twin links live through the renewals too.
        client.get_twin().await.unwrap();
    }
    assert!(
        !state.has_changed().unwrap(),
        "the client reported a disconnection"
    );
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the client reconnected"
    );
    assert_eq!(client.connection_state(), ConnectionState::Connected);
    let logged = hub.telemetry(0, 100_000).await.unwrap();
    assert_eq!(logged.len(), sent);
    client.close().await;
}

/// Many devices share pooled connections: each has its own token and links, a device
/// refused its token fails alone, and one leaving does not disturb the others.
#[tokio::test]
async fn devices_multiplexed_on_a_pool() {
    let hub = emulator().await;
    let pool = AmqpPool::new(10).unwrap();
    let mut clients = Vec::new();
    for i in 0..25 {
        let options = amqp_options(&hub).amqp_pool(pool.clone());
        clients.push(device(&hub, &format!("mux-{i}"), options).await);
    }
    assert_eq!(pool.devices().await, 25);
    assert_eq!(pool.connections().await, 3);

    // A device with a wrong key fails alone.
    let cs = format!(
        "HostName={};DeviceId=mux-0;SharedAccessKey={}",
        hub.hostname(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    );
    let refused =
        DeviceClient::from_connection_string(&cs, amqp_options(&hub).amqp_pool(pool.clone()))
            .await
            .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unauthorized, "{refused}");

    // One leaves; the rest keep sending on the same connections.
    clients.remove(3).close().await;
    let sends = clients.iter().map(|client| async move {
        client
            .send_event(Message::new(client.identity().device_id().to_owned()).unwrap())
            .await
    });
    for result in futures_util::future::join_all(sends).await {
        result.unwrap();
    }
    assert_eq!(hub.telemetry(0, 100).await.unwrap().len(), 24);
    assert_eq!(pool.devices().await, 24);
    for client in &clients {
        client.close().await;
    }
    assert_eq!(pool.connections().await, 0);
}

/// A connection carries as many devices as IoT Hub allows on one (999, a session each beside
/// the CBS session): the AMQP library's default channel limit stopped it at 255. The next
/// device opens a second connection. Devices joining a new connection at once all get on.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_carries_999_devices_and_the_1000th_opens_another() {
    let hub = emulator().await;
    let pool = AmqpPool::new(MAX_DEVICES_PER_CONNECTION).unwrap();
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let mut keys = Vec::new();
    for i in 0..=MAX_DEVICES_PER_CONNECTION {
        let id = format!("full-{i:03}");
        let key = service.register_device(&id).await;
        keys.push((id, key));
    }
    // All joining at once, as a fleet does: the pool still fills one connection first, and
    // the devices put their tokens before their sessions begin (the hub closes a connection
    // that opens more than a few sessions before its first token).
    let connect = keys.iter().map(|(id, key)| {
        let cs = format!(
            "HostName={};DeviceId={id};SharedAccessKey={key}",
            hub.hostname()
        );
        let options = amqp_options(&hub).amqp_pool(pool.clone());
        async move {
            DeviceClient::from_connection_string(&cs, options)
                .await
                .unwrap()
        }
    });
    let clients = futures_util::future::join_all(connect).await;
    assert_eq!(pool.devices().await, MAX_DEVICES_PER_CONNECTION + 1);
    assert_eq!(pool.connections().await, 2);
    let sends = clients.iter().map(|client| async move {
        client
            .send_event(Message::new(client.identity().device_id().to_owned()).unwrap())
            .await
    });
    for result in futures_util::future::join_all(sends).await {
        result.unwrap();
    }
    assert_eq!(
        hub.telemetry(0, 2000).await.unwrap().len(),
        MAX_DEVICES_PER_CONNECTION + 1
    );
    for client in &clients {
        client.close().await;
    }
    assert_eq!(pool.connections().await, 0);
}

#[tokio::test]
async fn a_module_sends_outputs_and_answers_methods_over_amqp() {
    let hub = emulator().await;
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    service.register_device("edge-dev").await;
    let created = service
        .put(
            "/devices/edge-dev/modules/filter",
            serde_json::json!({"deviceId": "edge-dev", "moduleId": "filter"}),
        )
        .await;
    assert!(created.status.is_success(), "{created:?}");
    let key = created.body["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let cs = format!(
        "HostName={};DeviceId=edge-dev;ModuleId=filter;SharedAccessKey={key}",
        hub.hostname()
    );
    let module = ModuleClient::from_connection_string(&cs, amqp_options(&hub))
        .await
        .unwrap();
    module
        .send_output("alerts", Message::new("hot").unwrap())
        .await
        .unwrap();
    let logged = hub.telemetry(0, 10).await.unwrap();
    assert_eq!(logged[0].message.body().as_ref(), b"hot");
    assert_eq!(
        logged[0].message.system_properties().output_name.as_deref(),
        Some("alerts")
    );
    let mut calls = module.method_requests().await.unwrap();
    let invoked = service.invoke_method(
        "/twins/edge-dev/modules/filter",
        "reset",
        serde_json::Value::Null,
    );
    let call = tokio::time::timeout(WAIT, calls.recv())
        .await
        .unwrap()
        .unwrap();
    module
        .respond_to_method(MethodResponse::new(
            call.request_id,
            200,
            serde_json::json!("done"),
        ))
        .await
        .unwrap();
    assert_eq!(invoked.await.unwrap().body["payload"], "done");
    module.close().await;
}

/// A lost connection carrying 100 multiplexed devices: every device notices, reconnects by
/// its own retry policy onto a new pooled connection, and sends again.
#[tokio::test]
async fn a_lost_connection_of_100_multiplexed_devices_comes_back() {
    let hub = emulator().await;
    let (port, connections, cut) = relay(hub.amqp_addr()).await;
    let pool = AmqpPool::new(995).unwrap();
    let mut clients = Vec::new();
    for i in 0..100 {
        let options = amqp_options(&hub).port(port).amqp_pool(pool.clone());
        clients.push(device(&hub, &format!("lost-{i}"), options).await);
    }
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    let mut states: Vec<_> = clients
        .iter()
        .map(|c| {
            let mut state = c.watch_connection_state();
            state.mark_unchanged();
            state
        })
        .collect();
    cut.send_replace(1);
    for state in &mut states {
        tokio::time::timeout(WAIT, state.wait_for(|s| *s != ConnectionState::Connected))
            .await
            .unwrap()
            .unwrap();
    }
    let sends = clients.iter().map(|client| async move {
        client
            .send_event(Message::new(client.identity().device_id().to_owned()).unwrap())
            .await
    });
    for result in futures_util::future::join_all(sends).await {
        result.unwrap();
    }
    assert!(
        clients
            .iter()
            .all(|c| c.connection_state() == ConnectionState::Connected)
    );
    assert_eq!(pool.devices().await, 100);
    assert_eq!(
        pool.connections().await,
        1,
        "one new connection carries them all"
    );
    assert_eq!(hub.telemetry(0, 1000).await.unwrap().len(), 100);
    for client in &clients {
        client.close().await;
    }
}

/// More operations in flight than a unit's command queue holds: the rest wait in the engine
/// and are handed over as the unit makes room; every one is acknowledged.
#[tokio::test]
async fn more_sends_in_flight_than_the_unit_queue_holds() {
    let hub = emulator().await;
    let options = amqp_options(&hub).max_pending_operations(500);
    let client = device(&hub, "many-dev", options).await;
    let sends = (0..500).map(|i| {
        let client = client.clone();
        async move {
            client
                .send_event(Message::new(format!("m{i}")).unwrap())
                .await
        }
    });
    for result in futures_util::future::join_all(sends).await {
        result.unwrap();
    }
    assert_eq!(hub.telemetry(0, 1000).await.unwrap().len(), 500);
    client.close().await;
}
