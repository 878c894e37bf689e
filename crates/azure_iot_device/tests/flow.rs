//! Flow control and settlement against the in-process emulator: operations held while the
//! hub is down stay within `max_pending_operations` and are never sent once their callers
//! timed out; a slow application with full inbound streams keeps its connection; C2D
//! settlement over MQTT (completion in arrival order, abandon/reject unsupported).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_core::retry::FixedInterval;
use azure_iot_device::{ClientOptions, ConnectionState, DeviceClient, ErrorKind, Message};
use azure_iot_emulator::{EmulatorHandle, Fault, RefusalReason};
use azure_iot_test::{HubEndpoint, RestClient, emulator};

const WAIT: Duration = Duration::from_secs(10);

async fn device_with(
    hub: &EmulatorHandle,
    device_id: &str,
    options: ClientOptions,
) -> (DeviceClient, RestClient) {
    let service = RestClient::new(&HubEndpoint::of(hub), "iothubowner");
    let key = service.register_device(device_id).await;
    let cs = format!(
        "HostName={};DeviceId={device_id};SharedAccessKey={key}",
        hub.hostname()
    );
    let client = DeviceClient::from_connection_string(&cs, options)
        .await
        .expect("the device connects");
    (client, service)
}

fn options(hub: &EmulatorHandle) -> ClientOptions {
    ClientOptions::default()
        .trusted_ca_pem(hub.ca_pem())
        .port(hub.mqtt_addr().port())
        .operation_timeout(WAIT)
}

async fn c2d_count(service: &RestClient, device_id: &str) -> serde_json::Value {
    service.get(&format!("/devices/{device_id}")).await.body["cloudToDeviceMessageCount"].clone()
}

/// Hub down, N sends that time out, hub up: none of them is delivered, and the client never
/// held more than `max_pending_operations` of them.
#[tokio::test]
async fn sends_that_timed_out_while_the_hub_was_down_are_never_delivered() {
    const MAX_PENDING: usize = 4;
    const SENDS: usize = 32;
    let hub = emulator().await;
    let (client, _) = device_with(
        &hub,
        "flow-1",
        options(&hub)
            .max_pending_operations(MAX_PENDING)
            .operation_timeout(Duration::from_millis(400))
            .retry_policy(FixedInterval {
                interval: Duration::from_millis(50),
                max_retries: None,
            }),
    )
    .await;
    // The hub goes down: the connection drops and every reconnect is refused (CONNACK 3,
    // server unavailable: transient, so the client keeps trying).
    hub.inject(Fault::RefuseConnects {
        device_id: "flow-1".into(),
        module_id: None,
        count: u32::MAX,
        reason: RefusalReason::ServerUnavailable,
    })
    .await
    .unwrap();
    hub.inject(Fault::DropConnection {
        device_id: "flow-1".into(),
        module_id: None,
    })
    .await
    .unwrap();
    let mut state = client.watch_connection_state();
    tokio::time::timeout(WAIT, state.wait_for(|s| *s != ConnectionState::Connected))
        .await
        .unwrap()
        .unwrap();

    let sends: Vec<_> = (0..SENDS)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .send_event(Message::new(format!("offline {i}")).unwrap())
                    .await
            })
        })
        .collect();
    let mut most_held = 0;
    while !sends.iter().all(|s| s.is_finished()) {
        most_held = most_held.max(client.pending_operations());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for send in sends {
        let e = send.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    }
    assert!(most_held <= MAX_PENDING, "held {most_held} > {MAX_PENDING}");
    assert_eq!(
        client.pending_operations(),
        0,
        "nothing held after the timeouts"
    );
    println!(
        "offline flow control: {SENDS} sends timed out, at most {most_held} held \
         (max_pending_operations = {MAX_PENDING})"
    );

    // The hub comes back: the client reconnects; a new send goes through, and nothing
    // of the timed-out ones went before it.
    hub.clear_faults().await.unwrap();
    tokio::time::timeout(WAIT, state.wait_for(|s| *s == ConnectionState::Connected))
        .await
        .unwrap()
        .unwrap();
    let client = DeviceClient::clone(&client);
    let after = tokio::time::timeout(WAIT, async {
        loop {
            match client.send_event(Message::new("after").unwrap()).await {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::Timeout => continue,
                Err(e) => panic!("{e}"),
            }
        }
    });
    after.await.unwrap();
    let logged = hub.telemetry(0, 100).await.unwrap();
    let bodies: Vec<_> = logged
        .iter()
        .map(|e| String::from_utf8_lossy(e.message.body()).into_owned())
        .collect();
    assert!(
        bodies.iter().all(|b| b == "after"),
        "a timed-out send was delivered: {bodies:?}"
    );
}

/// An application that does not read its streams: they fill up (capacity 1), the client
/// stops reading the socket, but keep-alive goes on and the connection stays up across
/// several keep-alive periods; then every message arrives, in order.
#[tokio::test]
async fn a_slow_application_with_full_streams_keeps_its_connection() {
    let hub = emulator().await;
    let (client, _) = device_with(
        &hub,
        "flow-2",
        options(&hub)
            .inbound_capacity(1)
            .keep_alive(Duration::from_secs(1)),
    )
    .await;
    let mut messages = client.cloud_to_device_messages().await.unwrap();
    let mut state = client.watch_connection_state();
    state.mark_unchanged();
    for i in 0..6 {
        hub.send_cloud_to_device("flow-2", Message::new(format!("m{i}")).unwrap())
            .await
            .unwrap();
    }
    // Wait until the pushes have filled the client's stream, then let three keep-alive
    // periods pass on tokio's paused clock (the hub closes a connection silent for 1.5 of
    // them; the client would declare it dead half a period after an unanswered PINGREQ).
    // Client and hub share this runtime, so both see the same jumps in time.
    tokio::time::timeout(WAIT, async {
        while messages.is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the stream filled");
    tokio::time::pause();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    tokio::time::resume();
    assert!(
        !state.has_changed().unwrap(),
        "the connection stayed up: {:?}",
        *state.borrow()
    );
    assert_eq!(client.connection_state(), ConnectionState::Connected);
    for i in 0..6 {
        let m = tokio::time::timeout(WAIT, messages.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.body().as_ref(), format!("m{i}").as_bytes());
    }
    client.get_twin().await.unwrap();
    assert!(!state.has_changed().unwrap());
}

/// Settlement over MQTT: completion is the PUBACK, in arrival order; abandon and reject are
/// not possible there and leave the message unsettled; dropping a message completes it.
#[tokio::test]
async fn cloud_to_device_settlement_over_mqtt() {
    let hub = emulator().await;
    let (client, service) = device_with(&hub, "flow-3", options(&hub)).await;
    let mut messages = client
        .cloud_to_device_messages_with_settlement()
        .await
        .unwrap();
    for body in ["first", "second", "third"] {
        hub.send_cloud_to_device("flow-3", Message::new(body).unwrap())
            .await
            .unwrap();
    }
    let mut first = tokio::time::timeout(WAIT, messages.recv())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(WAIT, messages.recv())
        .await
        .unwrap()
        .unwrap();
    let third = tokio::time::timeout(WAIT, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            first.body().as_ref(),
            second.body().as_ref(),
            third.message().body().as_ref()
        ),
        (&b"first"[..], &b"second"[..], &b"third"[..])
    );

    let e = first.abandon().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("MQTT cannot abandon/reject"), "{e}");
    let e = first.reject().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");

    // The second is completed first: its PUBACK waits for the first's (MQTT 3.1.1 §4.6.0-2),
    // so the hub still holds all three. (A twin round trip orders this after the PUBACKs
    // the client would have sent.)
    second.complete().await.unwrap();
    client.get_twin().await.unwrap();
    assert_eq!(c2d_count(&service, "flow-3").await, 3);

    first.complete().await.unwrap();
    client.get_twin().await.unwrap();
    assert_eq!(
        c2d_count(&service, "flow-3").await,
        1,
        "first and second completed"
    );

    drop(third);
    client.get_twin().await.unwrap();
    assert_eq!(c2d_count(&service, "flow-3").await, 0, "dropping completes");
}

/// A device whose earlier process subscribed to C2D (the hub keeps that in the persistent
/// session) and whose new process never opens a C2D stream still gets twin answers while the
/// hub pushes it a full queue of messages.
#[tokio::test]
async fn a_full_c2d_queue_without_a_stream_does_not_starve_twin_answers() {
    let hub = emulator().await;
    let (first, service) = device_with(&hub, "flow-4", options(&hub)).await;
    drop(first.cloud_to_device_messages().await.unwrap());
    first.close().await;
    for i in 0..50 {
        hub.send_cloud_to_device("flow-4", Message::new(format!("m{i}")).unwrap())
            .await
            .unwrap();
    }
    let key =
        service.get("/devices/flow-4").await.body["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap()
            .to_owned();
    let cs = format!(
        "HostName={};DeviceId=flow-4;SharedAccessKey={key}",
        hub.hostname()
    );
    let second = DeviceClient::from_connection_string(&cs, options(&hub))
        .await
        .unwrap();
    for _ in 0..3 {
        let twin = tokio::time::timeout(WAIT, second.get_twin()).await;
        assert!(matches!(twin, Ok(Ok(_))), "twin answered: {twin:?}");
    }
    second.close().await;
}
