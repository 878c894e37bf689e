//! Cloud-to-device messages: durable queues, MQTT delivery completed by PUBACK, redelivery,
//! limits, expiry, purge, and the feedback the sender asked for (read over REST).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_core::message::{AckMode, Message};
use azure_iot_protocol::mqtt::codec::{Packet, PubAck, QoS};
use azure_iot_test::{HubEndpoint, MqttClient, RestClient, device_token, emulator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const HOUR: Duration = Duration::from_secs(3600);

fn c2d(mid: &str, ack: AckMode) -> Message {
    Message::builder(format!("body of {mid}"))
        .message_id(mid)
        .ack(ack)
        .property("k", "v 1")
        .build()
        .unwrap()
}

async fn feedback(c: &RestClient) -> Vec<Value> {
    let r = c.get("/messages/serviceBound/feedback").await;
    if r.status == StatusCode::NO_CONTENT {
        return Vec::new();
    }
    assert_eq!(r.status, StatusCode::OK);
    let etag = r.headers["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let done = c
        .delete(&format!("/messages/serviceBound/feedback/{etag}"))
        .await;
    assert_eq!(done.status, StatusCode::NO_CONTENT);
    r.body.as_array().unwrap().clone()
}

#[tokio::test]
async fn queued_messages_are_delivered_on_subscribe_and_completed_by_puback() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    hub.send_cloud_to_device("dev1", c2d("m1", AckMode::Full))
        .await
        .unwrap();
    assert_eq!(
        c.get("/devices/dev1").await.body["cloudToDeviceMessageCount"],
        1
    );

    let token = device_token(&ep, "dev1", None, &key, HOUR);
    let (mut device, _) = MqttClient::connect(&ep, "dev1", &token, true, 60).await;
    let mut subscribe = azure_iot_protocol::mqtt::codec::Subscribe::new(
        "devices/dev1/messages/devicebound/#",
        QoS::AtLeastOnce,
    );
    subscribe.pkid = device.pkid();
    device.send(Packet::Subscribe(subscribe)).await;
    assert!(matches!(device.recv().await, Some(Packet::SubAck(_))));
    let delivered = match device.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected the queued message, got {other:?}"),
    };
    assert_eq!(delivered.qos, QoS::AtLeastOnce);
    assert_eq!(delivered.payload.as_ref(), b"body of m1");
    // Every client parser's needs: %24. keys, encoded slashes, $.to present, .NET timestamps.
    assert!(
        delivered
            .topic
            .starts_with("devices/dev1/messages/devicebound/%24.mid=m1&%24.exp="),
        "{}",
        delivered.topic
    );
    assert!(
        delivered
            .topic
            .contains("&%24.to=%2Fdevices%2Fdev1%2Fmessages%2FdeviceBound&iothub-ack=full&k=v%201"),
        "{}",
        delivered.topic
    );
    assert!(
        c.get("/messages/serviceBound/feedback").await.status == StatusCode::NO_CONTENT,
        "no feedback before completion"
    );

    device
        .send(Packet::PubAck(PubAck::new(delivered.pkid)))
        .await;
    // The completion is processed before the next request on the same connection is answered.
    device.send(Packet::PingReq).await;
    assert_eq!(device.recv().await, Some(Packet::PingResp));
    let records = feedback(&c).await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["originalMessageId"], "m1");
    assert_eq!(r["statusCode"], "Success");
    assert_eq!(r["description"], "Success");
    assert_eq!(r["deviceId"], "dev1");
    assert!(
        r["deviceGenerationId"]
            .as_str()
            .is_some_and(|g| !g.is_empty())
    );
    assert_eq!(
        c.get("/devices/dev1").await.body["cloudToDeviceMessageCount"],
        0
    );
    assert!(feedback(&c).await.is_empty(), "completed feedback is gone");
    hub.shutdown().await;
}

#[tokio::test]
async fn live_delivery_and_redelivery_of_unacknowledged_messages() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    let token = device_token(&ep, "dev1", None, &key, HOUR);
    let (mut first, _) = MqttClient::connect(&ep, "dev1", &token, false, 60).await;
    first
        .subscribe("devices/dev1/messages/devicebound/#", QoS::AtLeastOnce)
        .await;
    hub.send_cloud_to_device("dev1", c2d("live", AckMode::Positive))
        .await
        .unwrap();
    match first.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.payload.as_ref(), b"body of live"),
        other => panic!("{other:?}"),
    }
    // Dropped without PUBACK: the message stays queued and comes again on the next session.
    drop(first);
    let (mut second, ack) = MqttClient::connect(&ep, "dev1", &token, false, 60).await;
    assert!(ack.session_present);
    let again = match second.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected redelivery, got {other:?}"),
    };
    assert_eq!(again.payload.as_ref(), b"body of live");
    second.send(Packet::PubAck(PubAck::new(again.pkid))).await;
    second.send(Packet::PingReq).await;
    assert_eq!(second.recv().await, Some(Packet::PingResp));
    let records = feedback(&c).await;
    assert_eq!(records[0]["statusCode"], "Success");
    assert_eq!(
        c.get("/devices/dev1").await.body["cloudToDeviceMessageCount"],
        0
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_reconnect_while_the_old_connection_is_still_open_gets_its_unacknowledged_message() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    let token = device_token(&ep, "dev1", None, &key, HOUR);
    let (mut first, _) = MqttClient::connect(&ep, "dev1", &token, false, 60).await;
    first
        .subscribe("devices/dev1/messages/devicebound/#", QoS::AtLeastOnce)
        .await;
    hub.send_cloud_to_device("dev1", c2d("held", AckMode::None))
        .await
        .unwrap();
    assert!(matches!(first.recv().await, Some(Packet::Publish(_))));
    // A half-open network: the device reconnects while its old socket is still open, without
    // having acknowledged the message. The new session gets it at once.
    let (mut second, ack) = MqttClient::connect(&ep, "dev1", &token, false, 60).await;
    assert!(ack.session_present);
    let again = match second.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected redelivery on the new connection, got {other:?}"),
    };
    assert_eq!(again.payload.as_ref(), b"body of held");
    second.send(Packet::PubAck(PubAck::new(again.pkid))).await;
    second.send(Packet::PingReq).await;
    assert_eq!(second.recv().await, Some(Packet::PingResp));
    assert_eq!(
        c.get("/devices/dev1").await.body["cloudToDeviceMessageCount"],
        0,
        "the new connection's PUBACK completed it"
    );
    drop(first);
    hub.shutdown().await;
}

#[tokio::test]
async fn queue_limit_purge_and_feedback_per_ack_mode() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    c.register_device("dev1").await;
    for i in 0..50 {
        let ack = match i % 4 {
            0 => AckMode::None,
            1 => AckMode::Positive,
            2 => AckMode::Negative,
            _ => AckMode::Full,
        };
        hub.send_cloud_to_device("dev1", c2d(&format!("m{i}"), ack))
            .await
            .unwrap();
    }
    let full = hub
        .send_cloud_to_device("dev1", c2d("m50", AckMode::None))
        .await
        .unwrap_err();
    assert!(
        full.to_string().contains("DeviceMaximumQueueDepthExceeded"),
        "{full}"
    );
    let unknown = hub
        .send_cloud_to_device("ghost", c2d("x", AckMode::None))
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("DeviceNotFound"), "{unknown}");

    let purge = c.delete("/devices/dev1/commands").await;
    assert_eq!(
        purge.body,
        json!({"totalMessagesPurged": 50, "deviceId": "dev1", "moduleId": null})
    );
    // Purged is a negative outcome: negative and full messages report it (i % 4 of 2 or 3).
    let mut records = Vec::new();
    loop {
        let batch = feedback(&c).await;
        if batch.is_empty() {
            break;
        }
        records.extend(batch);
    }
    assert_eq!(records.len(), (0..50).filter(|i| i % 4 >= 2).count());
    assert!(records.iter().all(|r| r["statusCode"] == "Purged"));
    hub.shutdown().await;
}

#[tokio::test]
async fn expired_messages_are_dropped_with_feedback_and_state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let start = || async {
        azure_iot_emulator::Emulator::builder()
            .https_port(0)
            .mqtt_port(0)
            .amqp_port(0)
            .data_dir(dir.path())
            .start()
            .await
            .unwrap()
    };
    let hub = start().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    c.register_device("dev1").await;
    // Already expired: the sweep that every enqueue runs first finds it, so the feedback does
    // not depend on the once-a-second background sweep (which calls the same `sweep_c2d`).
    let soon = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let short = c2d("short", AckMode::Negative)
        .into_builder()
        .expiry_time_utc(soon)
        .build()
        .unwrap();
    hub.send_cloud_to_device("dev1", short).await.unwrap();
    hub.send_cloud_to_device("dev1", c2d("kept", AckMode::Full))
        .await
        .unwrap();
    let records = feedback(&c).await;
    assert_eq!(records[0]["originalMessageId"], "short");
    assert_eq!(records[0]["statusCode"], "Expired");
    hub.shutdown().await;

    // The other message is still queued after a restart.
    let hub = start().await;
    let c = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    assert_eq!(
        c.get("/devices/dev1").await.body["cloudToDeviceMessageCount"],
        1
    );
    let purge = c
        .request(Method::DELETE, "/devices/dev1/commands", None, &[])
        .await;
    assert_eq!(purge.body["totalMessagesPurged"], 1);
    hub.shutdown().await;
}

/// The data directory holds every key: it is 0700 and every file in it 0600, including the
/// files SQLite creates later (write-ahead logs), after traffic too.
#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_is_private_after_traffic() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("hub");
    let hub = azure_iot_emulator::Emulator::builder()
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .data_dir(&dir)
        .start()
        .await
        .unwrap();
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    let token = device_token(&ep, "dev1", None, &key, HOUR);
    let (mut device, _) = MqttClient::connect(&ep, "dev1", &token, true, 60).await;
    let pkid = device
        .publish("devices/dev1/messages/events/", "t", QoS::AtLeastOnce)
        .await;
    assert!(matches!(device.recv().await, Some(Packet::PubAck(a)) if a.pkid == pkid));
    hub.send_cloud_to_device("dev1", c2d("private", AckMode::Full))
        .await
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // Directories (the blob store) are the owner's only too.
        let private = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), private, "{}", path.display());
        files += 1;
    }
    assert!(
        files >= 6,
        "hub.db, its WAL, telemetry.db, its WAL, ca.pem, hub.json…"
    );
    hub.shutdown().await;
}

/// A message whose properties make an MQTT topic longer than 65,535 bytes can never be
/// published: it is rejected (dead-lettered, `Rejected` feedback), the device stays connected
/// and gets the next message. Before, the topic's length went out truncated to 16 bits.
#[tokio::test]
async fn a_message_too_big_for_an_mqtt_topic_is_rejected_not_mangled() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    let token = device_token(&ep, "dev1", None, &key, HOUR);
    let (mut device, _) = MqttClient::connect(&ep, "dev1", &token, true, 60).await;
    device
        .subscribe("devices/dev1/messages/devicebound/#", QoS::AtLeastOnce)
        .await;
    let huge = Message::builder("huge")
        .message_id("huge")
        .ack(AckMode::Full)
        .property("p", "/".repeat(30_000))
        .build()
        .unwrap();
    hub.send_cloud_to_device("dev1", huge).await.unwrap();
    hub.send_cloud_to_device("dev1", c2d("next", AckMode::None))
        .await
        .unwrap();
    let delivered = device.next_publish().await;
    assert_eq!(delivered.payload.as_ref(), b"body of next");
    device
        .send(Packet::PubAck(PubAck::new(delivered.pkid)))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut records = Vec::new();
    while records.is_empty() {
        records = feedback(&c).await;
        assert!(tokio::time::Instant::now() < deadline, "no feedback");
    }
    assert_eq!(records[0]["originalMessageId"], "huge");
    assert_eq!(records[0]["statusCode"], "Rejected");
}
