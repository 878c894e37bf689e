//! Fault injection (in process and over HTTPS) and the telemetry monitor endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_emulator::Fault;
use azure_iot_protocol::mqtt::codec::{ConnectReturnCode, Packet, QoS};
use azure_iot_test::{HubEndpoint, MqttClient, RestClient, device_token, emulator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn drop_refuse_withhold_and_throttle() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    let token = device_token(&ep, "dev1", None, &key, HOUR);

    // Drop: the live connection closes at once.
    let (mut device, _) = MqttClient::connect(&ep, "dev1", &token, true, 60).await;
    hub.inject(Fault::DropConnection {
        device_id: "dev1".into(),
        module_id: None,
    })
    .await
    .unwrap();
    assert_eq!(device.recv().await, None);

    // Refuse the next two connects with "server unavailable", then accept.
    let refuse = c
        .request(
            Method::POST,
            "/$emulator/faults",
            Some(
                json!({"type": "refuseConnects", "deviceId": "dev1", "count": 2, "returnCode": 3}),
            ),
            &[],
        )
        .await;
    assert_eq!(refuse.status, StatusCode::NO_CONTENT, "{:?}", refuse.body);
    for _ in 0..2 {
        let (_, ack) = MqttClient::connect(&ep, "dev1", &token, true, 60).await;
        assert_eq!(ack.code, ConnectReturnCode::ServiceUnavailable);
    }
    let (mut device, ack) = MqttClient::connect(&ep, "dev1", &token, true, 60).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);

    // Withhold PUBACKs on the live connection: the message is logged but never acknowledged.
    hub.inject(Fault::WithholdPubacks {
        device_id: "dev1".into(),
        module_id: None,
    })
    .await
    .unwrap();
    device.send(Packet::PingReq).await;
    assert_eq!(device.recv().await, Some(Packet::PingResp));
    device
        .publish("devices/dev1/messages/events/", "unacked", QoS::AtLeastOnce)
        .await;
    device.send(Packet::PingReq).await;
    assert_eq!(
        device.recv().await,
        Some(Packet::PingResp),
        "no PUBACK before the PINGRESP"
    );
    // Logged all the same: the log commits in groups, so wait (bounded) for its commit, which
    // no acknowledgement announces here.
    let logged = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let events = hub.telemetry(0, 10).await.unwrap();
            if !events.is_empty() {
                return events.len();
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(logged, Ok(1));

    // Throttle twin requests: 429 with an error body.
    hub.inject(Fault::ThrottleTwin {
        device_id: "dev1".into(),
        module_id: None,
    })
    .await
    .unwrap();
    device
        .subscribe("$iothub/twin/res/#", QoS::AtLeastOnce)
        .await;
    device
        .publish("$iothub/twin/GET/?$rid=1", " ", QoS::AtMostOnce)
        .await;
    let res = device.next_publish().await;
    assert_eq!(res.topic, "$iothub/twin/res/429/?$rid=1");
    assert_eq!(
        serde_json::from_slice::<Value>(&res.payload).unwrap()["errorCode"],
        429001
    );

    // Clearing restores normal service on the same connection.
    let cleared = c
        .request(Method::DELETE, "/$emulator/faults?deviceId=dev1", None, &[])
        .await;
    assert_eq!(cleared.status, StatusCode::NO_CONTENT);
    device
        .publish("$iothub/twin/GET/?$rid=2", " ", QoS::AtMostOnce)
        .await;
    assert_eq!(
        device.next_publish().await.topic,
        "$iothub/twin/res/200/?$rid=2"
    );
    let pkid = device
        .publish("devices/dev1/messages/events/", "acked", QoS::AtLeastOnce)
        .await;
    assert!(matches!(device.recv().await, Some(Packet::PubAck(a)) if a.pkid == pkid));

    // Bad fault descriptions are 400s.
    for bad in [
        json!({"type": "meteorStrike", "deviceId": "dev1"}),
        json!({"type": "refuseConnects", "deviceId": "dev1", "count": 1, "returnCode": 9}),
    ] {
        let r = c
            .request(Method::POST, "/$emulator/faults", Some(bad.clone()), &[])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn delayed_pubacks_arrive_late() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "iothubowner");
    let key = c.register_device("dev1").await;
    hub.inject(Fault::DelayPubacks {
        device_id: "dev1".into(),
        module_id: None,
        milliseconds: 300,
    })
    .await
    .unwrap();
    let token = device_token(&ep, "dev1", None, &key, HOUR);
    let (mut device, _) = MqttClient::connect(&ep, "dev1", &token, true, 60).await;
    let started = std::time::Instant::now();
    device
        .publish("devices/dev1/messages/events/", "slow", QoS::AtLeastOnce)
        .await;
    assert!(matches!(device.recv().await, Some(Packet::PubAck(_))));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    hub.clear_faults().await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn monitor_endpoint_reads_and_long_polls_the_log() {
    let hub = emulator().await;
    let ep = HubEndpoint::of(&hub);
    let c = RestClient::new(&ep, "service");
    let owner = RestClient::new(&ep, "iothubowner");
    let key = owner.register_device("dev1").await;
    owner.register_device("dev2").await;
    let token = device_token(&ep, "dev1", None, &key, HOUR);
    let (mut device, _) = MqttClient::connect(&ep, "dev1", &token, true, 60).await;
    device
        .publish(
            "devices/dev1/messages/events/%24.mid=a&%24.ct=application%2Fjson&color=red",
            r#"{"t":1}"#,
            QoS::AtLeastOnce,
        )
        .await;
    device.recv().await;
    device
        .publish(
            "devices/dev1/messages/events/",
            vec![0xff, 0x00],
            QoS::AtLeastOnce,
        )
        .await;
    device.recv().await;

    let all = c.get("/$emulator/telemetry?after=0").await;
    assert_eq!(all.status, StatusCode::OK);
    let events = all.body.as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["deviceId"], "dev1");
    assert_eq!(events[0]["body"], r#"{"t":1}"#);
    assert_eq!(events[0]["properties"], json!({"color": "red"}));
    assert_eq!(events[0]["systemProperties"]["messageId"], "a");
    assert_eq!(
        events[0]["systemProperties"]["contentType"],
        "application/json"
    );
    assert_eq!(events[0]["systemProperties"]["connectionDeviceId"], "dev1");
    assert_eq!(events[1]["bodyBase64"], "/wA=");
    let last = events[1]["sequenceNumber"].as_u64().unwrap();

    // Long poll: waits for the next message, then answers with it.
    let waiter = c.clone();
    let poll = tokio::spawn(async move {
        waiter
            .get(&format!(
                "/$emulator/telemetry?after={last}&wait=30&deviceId=dev1"
            ))
            .await
    });
    // Whether the poll is registered before or after the publish, it answers with the
    // message: a poll for `after={last}` returns as soon as a newer one exists.
    device
        .publish("devices/dev1/messages/events/", "late", QoS::AtLeastOnce)
        .await;
    let polled = poll.await.unwrap();
    assert_eq!(polled.body[0]["body"], "late");
    // Nothing new: an empty array after the wait.
    let empty = c
        .get(&format!("/$emulator/telemetry?after={}&wait=0", last + 1))
        .await;
    assert_eq!(empty.body, json!([]));
    assert_eq!(
        c.get("/$emulator/telemetry?deviceId=dev2").await.body,
        json!([])
    );
    assert_eq!(
        c.get("/$emulator/telemetry?limit=0").await.status,
        StatusCode::BAD_REQUEST
    );
    let reader = RestClient::new(&ep, "registryRead");
    assert_eq!(
        reader.get("/$emulator/telemetry").await.status,
        StatusCode::UNAUTHORIZED
    );
    hub.shutdown().await;
}
