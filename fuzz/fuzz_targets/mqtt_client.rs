//! The device side's MQTT state machine fed whatever a hub (or an attacker in its place) could
//! send: packets decoded from arbitrary bytes, interleaved with time. It never panics, and its
//! in-flight set never exceeds its bound.
#![no_main]

use std::time::{Duration, Instant};

use azure_iot_protocol::Identity;
use azure_iot_protocol::mqtt::client::{Client, Config, Feature};
use azure_iot_protocol::mqtt::codec::{MAX_PACKET_BYTES, read_packet};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut client = Client::new(Config {
        identity: Identity::device("d1"),
        host: "hub".into(),
        model_id: None,
        client_type: "fuzz".into(),
        keep_alive: Duration::from_secs(60),
        max_in_flight: 4,
    });
    let mut now = Instant::now();
    client.connect(now, Some("token"));
    for feature in [Feature::CloudToDevice, Feature::TwinResponses, Feature::Methods] {
        client.subscribe(now, feature);
    }
    let deadline = now + Duration::from_secs(600);
    let mut buffer = BytesMut::from(data);
    loop {
        while client.poll_transmit(now).is_some() {}
        while let Some(_event) = client.poll_event() {}
        let packet = match read_packet(&mut buffer, MAX_PACKET_BYTES) {
            Ok(Some(packet)) => packet,
            _ => break,
        };
        if client.handle_packet(now, packet).is_err() {
            client.connection_lost(now);
            client.connect(now, Some("token"));
        }
        let _ = client.twin_get(now, deadline);
        now += Duration::from_secs(7);
        client.handle_timeout(now);
        assert!(client.in_flight() <= 4);
    }
});
