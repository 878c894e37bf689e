//! The device client against the in-process emulator over real TLS sockets: telemetry,
//! twins, desired patches, direct methods, cloud-to-device, refusals, timeouts and drops.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_device::{
    ClientOptions, ConnectionState, DeviceClient, DisconnectReason, ErrorKind, Message,
    MethodResponse,
};
use azure_iot_emulator::{EmulatorHandle, Fault, RefusalReason};
use azure_iot_test::{HubEndpoint, RestClient, emulator};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Waits long enough for a loaded CI machine, short enough to keep the suite quick.
const WAIT: Duration = Duration::from_secs(10);

fn options(hub: &EmulatorHandle) -> ClientOptions {
    ClientOptions::default()
        .trusted_ca_pem(hub.ca_pem())
        .port(hub.mqtt_addr().port())
        .operation_timeout(WAIT)
}

async fn device(hub: &EmulatorHandle, device_id: &str) -> (DeviceClient, RestClient) {
    device_with(hub, device_id, options(hub)).await
}

/// Registers `device_id` and connects it with `options`.
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

#[tokio::test]
async fn send_event_returns_once_the_hub_logged_the_message_with_its_properties() {
    let hub = emulator().await;
    let (client, _) = device(&hub, "dev-1").await;
    assert_eq!(client.connection_state(), ConnectionState::Connected);
    let message = Message::builder("{\"t\":21}")
        .message_id("m-1")
        .content_type("application/json")
        .content_encoding("utf-8")
        .property("k space", "v/slash")
        .build()
        .unwrap();
    client.send_event(message).await.unwrap();
    // No wait: Ok means the hub acknowledged, and the hub acknowledges after logging.
    let logged = hub.telemetry(0, 10).await.unwrap();
    assert_eq!(logged.len(), 1);
    let m = &logged[0].message;
    assert_eq!(m.body().as_ref(), b"{\"t\":21}");
    assert_eq!(m.property("k space"), Some("v/slash"));
    assert_eq!(m.system_properties().message_id.as_deref(), Some("m-1"));
    assert_eq!(
        m.system_properties().content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(
        m.system_properties().connection_device_id.as_deref(),
        Some("dev-1")
    );

    // Many sends in flight at once all complete, each on its own PUBACK.
    let sends = (0..50).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .send_event(Message::new(format!("{i}")).unwrap())
                .await
        })
    });
    for send in sends {
        send.await.unwrap().unwrap();
    }
    assert_eq!(hub.telemetry(0, 100).await.unwrap().len(), 51);
    client.close().await;
}

#[tokio::test]
async fn twin_get_reported_patch_and_desired_patches() {
    let hub = emulator().await;
    let (client, service) = device(&hub, "dev-2").await;
    let twin = client.get_twin().await.unwrap();
    assert_eq!(twin.desired["$version"], 1);
    assert_eq!(twin.reported["$version"], 1);

    let version = client
        .update_reported_properties(&json!({"firmware": "1.2", "battery": 90}))
        .await
        .unwrap();
    assert_eq!(version, 2);
    let seen = service.get("/twins/dev-2").await;
    assert_eq!(seen.body["properties"]["reported"]["firmware"], "1.2");
    assert_eq!(
        client.get_twin().await.unwrap().reported["battery"],
        json!(90)
    );

    let mut patches = client.desired_property_patches().await.unwrap();
    let r = service
        .request(
            Method::PATCH,
            "/twins/dev-2",
            Some(json!({"properties": {"desired": {"fan": true}}})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let patch = tokio::time::timeout(WAIT, patches.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(patch.version, 2);
    assert_eq!(patch.patch["fan"], true);

    let refused = client
        .update_reported_properties(&json!([1, 2]))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test]
async fn direct_methods_are_received_and_answered() {
    let hub = emulator().await;
    let (client, service) = device(&hub, "dev-3").await;
    let mut calls = client.method_requests().await.unwrap();
    let invoke = tokio::spawn(async move {
        service
            .request(
                Method::POST,
                "/twins/dev-3/methods",
                Some(json!({"methodName": "reboot", "payload": {"delay": 5}, "responseTimeoutInSeconds": 10})),
                &[],
            )
            .await
    });
    let call = tokio::time::timeout(WAIT, calls.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.name, "reboot");
    assert_eq!(call.payload["delay"], 5);
    client
        .respond_to_method(MethodResponse::new(
            call.request_id,
            202,
            json!({"rebooting": true}),
        ))
        .await
        .unwrap();
    let result = invoke.await.unwrap();
    assert_eq!(result.status, StatusCode::OK, "{:?}", result.body);
    assert_eq!(result.body["status"], 202);
    assert_eq!(result.body["payload"]["rebooting"], true);
}

#[tokio::test]
async fn cloud_to_device_messages_arrive_with_their_properties() {
    let hub = emulator().await;
    let (client, _) = device(&hub, "dev-4").await;
    // Queued before the device subscribes: the hub delivers it on SUBSCRIBE.
    let queued = Message::builder("first")
        .message_id("c2d-1")
        .property("color", "green")
        .build()
        .unwrap();
    hub.send_cloud_to_device("dev-4", queued).await.unwrap();
    let mut messages = client.cloud_to_device_messages().await.unwrap();
    let first = tokio::time::timeout(WAIT, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.body().as_ref(), b"first");
    assert_eq!(first.property("color"), Some("green"));
    assert_eq!(
        first.system_properties().message_id.as_deref(),
        Some("c2d-1")
    );

    hub.send_cloud_to_device("dev-4", Message::new("second").unwrap())
        .await
        .unwrap();
    let second = tokio::time::timeout(WAIT, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.body().as_ref(), b"second");
}

#[tokio::test]
async fn bad_credentials_and_bad_input_fail_at_the_call_with_a_typed_error() {
    let hub = emulator().await;
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    service.register_device("dev-5").await;
    let wrong_key = format!(
        "HostName={};DeviceId=dev-5;SharedAccessKey={}",
        hub.hostname(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    );
    let e = DeviceClient::from_connection_string(&wrong_key, options(&hub))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    assert!(
        !e.to_string().contains("AAAAAAAA"),
        "the key is not in the error: {e}"
    );

    let e = DeviceClient::from_connection_string("HostName=h;DeviceId=d", options(&hub))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let e = DeviceClient::from_connection_string(
        "HostName=h;DeviceId=d;SharedAccessKey=not base64!",
        options(&hub),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let e = DeviceClient::from_connection_string(
        "HostName=localhost;DeviceId=d;SharedAccessKey=AAAA",
        options(&hub).trusted_ca_pem("not a certificate"),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    // Nothing listens on the port of a listener we just closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = DeviceClient::from_connection_string(
        &format!("HostName=localhost;DeviceId=d;SharedAccessKey={}", "AAAA"),
        options(&hub).port(port),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    assert!(e.is_transient());
}

#[tokio::test]
async fn an_operation_the_hub_never_answers_times_out() {
    let hub = emulator().await;
    let (client, _) = device_with(
        &hub,
        "dev-6",
        options(&hub).operation_timeout(Duration::from_millis(300)),
    )
    .await;
    hub.inject(Fault::WithholdPubacks {
        device_id: "dev-6".into(),
        module_id: None,
    })
    .await
    .unwrap();
    let e = client
        .send_event(Message::new("x").unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.is_transient());
}

async fn drop_connection(hub: &EmulatorHandle, device_id: &str) {
    hub.inject(Fault::DropConnection {
        device_id: device_id.into(),
        module_id: None,
    })
    .await
    .unwrap();
}

async fn wait_for_state(
    client: &DeviceClient,
    wanted: impl Fn(&ConnectionState) -> bool,
) -> ConnectionState {
    let mut state = client.watch_connection_state();
    tokio::time::timeout(WAIT, state.wait_for(|s| wanted(s)))
        .await
        .expect("the state changed in time")
        .expect("the client is alive")
        .clone()
}

fn disconnected(s: &ConnectionState) -> bool {
    *s != ConnectionState::Connected
}

#[tokio::test]
async fn after_a_drop_the_client_reconnects_and_streams_carry_on() {
    let hub = emulator().await;
    let (client, _) = device(&hub, "dev-7").await;
    let mut messages = client.cloud_to_device_messages().await.unwrap();
    let mut state = client.watch_connection_state();
    state.mark_unchanged();
    drop_connection(&hub, "dev-7").await;
    tokio::time::timeout(WAIT, state.wait_for(disconnected))
        .await
        .unwrap()
        .unwrap();
    wait_for_state(&client, |s| *s == ConnectionState::Connected).await;

    client
        .send_event(Message::new("after").unwrap())
        .await
        .unwrap();
    hub.send_cloud_to_device("dev-7", Message::new("c2d after").unwrap())
        .await
        .unwrap();
    let m = tokio::time::timeout(WAIT, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.body().as_ref(), b"c2d after");
}

#[tokio::test]
async fn without_retries_a_drop_ends_the_client_and_operations_fail_instead_of_hanging() {
    let hub = emulator().await;
    let (client, _) = device_with(
        &hub,
        "dev-9",
        options(&hub).retry_policy(azure_iot_core::retry::NoRetry),
    )
    .await;
    let mut messages = client.cloud_to_device_messages().await.unwrap();
    drop_connection(&hub, "dev-9").await;
    let end = wait_for_state(&client, |s| {
        *s == ConnectionState::Disconnected(DisconnectReason::RetriesExhausted)
    })
    .await;
    assert_eq!(
        end,
        ConnectionState::Disconnected(DisconnectReason::RetriesExhausted)
    );
    assert_eq!(
        tokio::time::timeout(WAIT, messages.recv()).await.unwrap(),
        None
    );
    let e = client
        .send_event(Message::new("x").unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Disconnected, "{e}");
}

#[tokio::test]
async fn a_message_the_hub_did_not_acknowledge_is_sent_again_after_a_reconnect() {
    let hub = emulator().await;
    let (client, _) = device(&hub, "dev-10").await;
    hub.inject(Fault::WithholdPubacks {
        device_id: "dev-10".into(),
        module_id: None,
    })
    .await
    .unwrap();
    let sender = client.clone();
    let send = tokio::spawn(async move { sender.send_event(Message::new("once").unwrap()).await });
    // The hub logs it but never acknowledges it.
    tokio::time::timeout(WAIT, async {
        while hub.telemetry(0, 10).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert!(!send.is_finished());
    hub.clear_faults().await.unwrap();
    drop_connection(&hub, "dev-10").await;
    // Resent with DUP after the reconnect, acknowledged this time: the caller gets Ok.
    send.await.unwrap().unwrap();
    let logged = hub.telemetry(0, 10).await.unwrap();
    assert!(logged.iter().all(|e| e.message.body().as_ref() == b"once"));
    assert!(
        !logged.is_empty() && logged.len() <= 2,
        "at least once: {}",
        logged.len()
    );
}

#[tokio::test]
async fn a_desired_change_made_while_offline_is_delivered_after_the_reconnect() {
    let hub = emulator().await;
    let (client, service) = device(&hub, "dev-11").await;
    let mut patches = client.desired_property_patches().await.unwrap();
    // Keep the device away: every reconnect attempt is refused as "server unavailable".
    hub.inject(Fault::RefuseConnects {
        device_id: "dev-11".into(),
        module_id: None,
        count: 1_000,
        reason: RefusalReason::ServerUnavailable,
    })
    .await
    .unwrap();
    drop_connection(&hub, "dev-11").await;
    wait_for_state(&client, disconnected).await;
    let r = service
        .request(
            Method::PATCH,
            "/twins/dev-11",
            Some(json!({"properties": {"desired": {"fan": true}}})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    hub.clear_faults().await.unwrap();
    let patch = tokio::time::timeout(WAIT, patches.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(patch.version, 2);
    assert_eq!(patch.patch["fan"], true);
    // Delivered once: a later live patch comes next, not a repeat.
    let r = service
        .request(
            Method::PATCH,
            "/twins/dev-11",
            Some(json!({"properties": {"desired": {"fan": false}}})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let next = tokio::time::timeout(WAIT, patches.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((next.version, next.patch["fan"].clone()), (3, json!(false)));
}

#[tokio::test]
async fn credentials_refused_on_reconnect_end_the_client_as_unauthorized() {
    let hub = emulator().await;
    let (client, _) = device(&hub, "dev-12").await;
    hub.inject(Fault::RefuseConnects {
        device_id: "dev-12".into(),
        module_id: None,
        count: 1,
        reason: RefusalReason::NotAuthorized,
    })
    .await
    .unwrap();
    drop_connection(&hub, "dev-12").await;
    wait_for_state(&client, |s| {
        *s == ConnectionState::Disconnected(DisconnectReason::Unauthorized)
    })
    .await;
    let e = client
        .send_event(Message::new("x").unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
}

#[tokio::test]
async fn close_ends_the_connection_and_later_calls_say_closed() {
    let hub = emulator().await;
    let (client, _) = device(&hub, "dev-8").await;
    client.close().await;
    assert_eq!(
        client.connection_state(),
        ConnectionState::Disconnected(DisconnectReason::ClosedByUser)
    );
    let e = client.get_twin().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
}

#[tokio::test]
async fn a_short_lived_token_is_renewed_without_losing_or_failing_a_message() {
    let hub = emulator().await;
    // The hub closes a connection when its token expires (2 s); the client must renew first.
    let (client, _) = device_with(
        &hub,
        "dev-13",
        options(&hub).token_ttl(Duration::from_secs(2)),
    )
    .await;
    let mut state = client.watch_connection_state();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while state.changed().await.is_ok() {
            seen.push(state.borrow_and_update().clone());
        }
        seen
    });
    // Sends in flight across the renewals. The duration is wall-clock time because the hub
    // checks token expiry against the system clock, not a tokio clock.
    let mut sent = 0;
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let batch: Vec<_> = (0..10)
            .map(|i| {
                let client = client.clone();
                let body = format!("{}", sent + i);
                tokio::spawn(async move { client.send_event(Message::new(body).unwrap()).await })
            })
            .collect();
        for send in batch {
            send.await.unwrap().expect("no send fails across a renewal");
        }
        sent += 10;
    }
    assert_eq!(client.connection_state(), ConnectionState::Connected);
    client.close().await;
    let seen = watcher.await.unwrap();
    assert_eq!(
        seen,
        vec![ConnectionState::Disconnected(
            DisconnectReason::ClosedByUser
        )],
        "renewal is not a disconnection"
    );
    // At least once: a resent message may be logged twice, so read up to twice what was sent.
    let logged = hub.telemetry(0, 2 * sent as usize).await.unwrap();
    let mut bodies: Vec<u64> = logged
        .iter()
        .map(|e| {
            std::str::from_utf8(e.message.body())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    bodies.sort_unstable();
    bodies.dedup();
    assert_eq!(
        bodies.len() as u64,
        sent,
        "every acknowledged message is in the hub"
    );
}

#[tokio::test]
async fn a_client_given_a_token_ends_as_expired_token_when_it_expires() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let service = RestClient::new(&ep, "iothubowner");
    let key = service.register_device("dev-14").await;
    // A token the client cannot renew; the hub closes the connection when it expires.
    let token = azure_iot_test::device_token(&ep, "dev-14", None, &key, Duration::from_secs(2));
    let cs = format!(
        "HostName={};DeviceId=dev-14;SharedAccessSignature={token}",
        hub.hostname()
    );
    let client = DeviceClient::from_connection_string(&cs, options(&hub))
        .await
        .unwrap();
    client
        .send_event(Message::new("before").unwrap())
        .await
        .unwrap();
    let end = wait_for_state(&client, |s| {
        *s == ConnectionState::Disconnected(DisconnectReason::ExpiredToken)
    })
    .await;
    assert_eq!(
        end,
        ConnectionState::Disconnected(DisconnectReason::ExpiredToken)
    );
    let e = client
        .send_event(Message::new("after").unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Disconnected, "{e}");
    assert!(e.to_string().contains("ExpiredToken"), "{e}");
}

/// With a persistent session the hub pushes queued messages right after CONNACK, before the
/// application has asked for a stream: the client keeps them, unacknowledged, for the first
/// stream, and completes each only when it hands it over (the PUBACK is the completion).
#[tokio::test]
async fn c2d_pushed_before_the_stream_exists_is_kept_for_it() {
    let hub = emulator().await;
    let (client, service) = device(&hub, "dev-early").await;
    // Subscribe once, so that the session (clean session off) remembers the subscription.
    drop(client.cloud_to_device_messages().await.unwrap());
    client.close().await;
    hub.send_cloud_to_device("dev-early", Message::new("while offline").unwrap())
        .await
        .unwrap();

    let key = service.get("/devices/dev-early").await.body["authentication"]["symmetricKey"]
        ["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let cs = format!(
        "HostName={};DeviceId=dev-early;SharedAccessKey={key}",
        hub.hostname()
    );
    let client = DeviceClient::from_connection_string(&cs, options(&hub))
        .await
        .unwrap();
    // The hub pushed the message right after the CONNACK. A twin round trip later the
    // client has read it (MQTT keeps one connection's packets in order) but not completed
    // it: no stream has taken it yet.
    client.get_twin().await.unwrap();
    assert_eq!(
        service.get("/devices/dev-early").await.body["cloudToDeviceMessageCount"],
        1,
        "held for a stream, not completed"
    );
    let mut messages = client.cloud_to_device_messages().await.unwrap();
    let early = tokio::time::timeout(WAIT, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(early.body().as_ref(), b"while offline");
    // Handed over, so completed: its PUBACK went out before the next twin request.
    client.get_twin().await.unwrap();
    assert_eq!(
        service.get("/devices/dev-early").await.body["cloudToDeviceMessageCount"],
        0,
        "completed once the stream took it"
    );
    client.close().await;
}

/// A client given a token provider asks it for a token before every connection, so renewal
/// keeps working without the key; the symmetric-key constructor and the id checks.
#[tokio::test]
async fn token_providers_and_symmetric_keys() {
    let hub = emulator().await;
    let service = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let key = service.register_device("dev-provided").await;
    let (asked, mut asks) = tokio::sync::mpsc::unbounded_channel::<()>();
    let provider = {
        let hostname = hub.hostname().to_owned();
        let key = key.clone();
        move || {
            let _ = asked.send(());
            let token = azure_iot_core::SasToken::generate_with_ttl(
                &azure_iot_core::ResourceUri::device(&hostname, "dev-provided"),
                &azure_iot_core::SharedAccessKey::from_base64(&key).unwrap(),
                None,
                Duration::from_secs(2),
            );
            // As read from a file: with a trailing newline.
            let text = format!("{}\n", token.secret());
            async move { Ok::<_, std::io::Error>(text) }
        }
    };
    let client = DeviceClient::from_token_provider(
        hub.hostname(),
        "dev-provided",
        None,
        provider,
        options(&hub),
    )
    .await
    .unwrap();
    asks.recv().await.unwrap(); // for the first connection
    let state = client.watch_connection_state();
    // The 2 s token is renewed at 85 % of what it has left: the provider is asked again
    // (an event, not a timer in this test), and nobody sees a disconnection.
    tokio::time::timeout(WAIT, asks.recv())
        .await
        .expect("the provider is asked again before the token expires")
        .unwrap();
    client
        .send_event(Message::new("after renewal").unwrap())
        .await
        .unwrap();
    assert!(!state.has_changed().unwrap(), "renewal is invisible");
    assert_eq!(client.connection_state(), ConnectionState::Connected);
    client.close().await;

    // A provider that returns garbage: a typed error at the call.
    let bad = DeviceClient::from_token_provider(
        hub.hostname(),
        "dev-provided",
        None,
        || async { Ok::<_, std::io::Error>("not a token".to_owned()) },
        options(&hub),
    )
    .await
    .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidArgument, "{bad}");

    let keyed = DeviceClient::from_symmetric_key(
        hub.hostname(),
        "dev-provided",
        None,
        &key,
        options(&hub).max_pending_operations(4),
    )
    .await
    .unwrap();
    keyed
        .send_event(Message::new("keyed").unwrap())
        .await
        .unwrap();
    keyed.close().await;
    for (device, key) in [("bad/id", key.as_str()), ("dev-provided", "not base64!")] {
        let err =
            DeviceClient::from_symmetric_key(hub.hostname(), device, None, key, options(&hub))
                .await
                .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
}

/// Disabling a connected device closes its connection, and the reconnect is refused like a
/// wrong key: the client ends as `Unauthorized` instead of retrying forever.
#[tokio::test]
async fn a_device_disabled_while_connected_ends_as_unauthorized() {
    let hub = emulator().await;
    let (client, service) = device(&hub, "dev-disabled").await;
    let mut state = client.watch_connection_state();
    let mut identity = service.get("/devices/dev-disabled").await.body;
    identity["status"] = json!("disabled");
    let put = service
        .request(
            Method::PUT,
            "/devices/dev-disabled",
            Some(identity),
            &[("If-Match", "*")],
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    let ended = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| *s == ConnectionState::Disconnected(DisconnectReason::Unauthorized)),
    )
    .await;
    assert!(ended.is_ok(), "state is {:?}", client.connection_state());
}
