//! Golden tests: every AMQP frame the official SDKs sent (`testdata/vectors/amqp-*.jsonl`,
//! see its README) goes through this module's parsers and means what the capture says; what
//! we build equals what the SDKs (and the capture's server, where it followed the hub's
//! documented answers) sent, section by section.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fe2o3_amqp_types::messaging::message::DecodeIntoMessage;
use fe2o3_amqp_types::messaging::{Body, MessageId};
use fe2o3_amqp_types::primitives::Value;
use serde_json::Value as Json;

use super::*;
use azure_iot_core::message::AckMode;

fn records() -> Vec<(String, Json)> {
    let mut all = Vec::new();
    for file in [
        "amqp-node-device.jsonl",
        "amqp-node-service.jsonl",
        "amqp-python-service.jsonl",
    ] {
        let path = format!(
            "{}/../../testdata/vectors/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        for line in std::fs::read_to_string(path).unwrap().lines() {
            all.push((file.to_owned(), serde_json::from_str(line).unwrap()));
        }
    }
    all
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The message a transfer record carries, decoded by fe2o3's own codec.
fn decode(record: &Json) -> AmqpMessage {
    let bytes = hex(record["message"]["payload_hex"].as_str().unwrap());
    Body::<Value>::decode_message_from_reader(serde_amqp::read::SliceReader::new(&bytes)).unwrap()
}

fn transfers(direction: &str) -> Vec<(String, Json, AmqpMessage)> {
    records()
        .into_iter()
        .filter(|(_, r)| r["performative"] == "transfer" && r["message"].is_object())
        .filter(|(_, r)| r["direction"] == direction)
        .map(|(f, r)| {
            let m = decode(&r);
            (f, r, m)
        })
        .collect()
}

fn is_put_token(m: &AmqpMessage) -> bool {
    m.application_properties
        .as_ref()
        .and_then(|p| p.get("operation"))
        .is_some_and(|v| *v == "put-token".into())
}

fn is_cbs_answer(m: &AmqpMessage) -> bool {
    m.application_properties
        .as_ref()
        .is_some_and(|p| p.get("status-code").is_some())
        && m.message_annotations.is_none()
}

/// Every link address a client attached parses to the address the flow used it for, and
/// formats back to the bare form (Node's) or the absolute one (Python's).
#[test]
fn every_attached_address_parses() {
    let mut checked = 0;
    for (file, r) in records() {
        if r["performative"] != "attach" || r["direction"] != "client->server" {
            continue;
        }
        // The hub's end: a sender's target, a receiver's source.
        let receiver = r["fields"]["role"]["value"] == true;
        let terminus = if receiver { "source" } else { "target" };
        let text = r["fields"][terminus]["fields"]["address"]["value"]
            .as_str()
            .unwrap();
        let address = Address::parse(text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let device = |module: Option<&str>| ("dev-vectors".to_owned(), module.map(str::to_owned));
        let expected = match text.trim_start_matches("amqps://localhost") {
            "$cbs" => Address::Cbs,
            "/messages/devicebound" => Address::ServiceDeviceBound,
            "/messages/serviceBound/feedback" => Address::Feedback,
            "/messages/serviceBound/filenotifications" => Address::FileNotifications,
            "/devices/dev-vectors/messages/events" => {
                let (device_id, module_id) = device(None);
                Address::Events {
                    device_id,
                    module_id,
                }
            }
            "/devices/dev-vectors/messages/devicebound" => {
                let (device_id, module_id) = device(None);
                Address::DeviceBound {
                    device_id,
                    module_id,
                }
            }
            "/devices/dev-vectors/twin" => {
                let (device_id, module_id) = device(None);
                Address::Twin {
                    device_id,
                    module_id,
                }
            }
            "/devices/dev-vectors/methods/devicebound" => {
                let (device_id, module_id) = device(None);
                Address::Methods {
                    device_id,
                    module_id,
                }
            }
            other => panic!("{file}: unexpected address {other}"),
        };
        assert_eq!(address, expected, "{file}: {text}");
        let formatted = if text.starts_with("amqps://") {
            address.absolute("localhost")
        } else {
            address.to_string()
        };
        assert_eq!(formatted, text, "{file}: we format what the SDK sent");
        checked += 1;
    }
    // Node device: 8 per transport; Node service: 5; Python: 3 per flow.
    assert_eq!(checked, 27, "every client attach of the capture");
}

/// Every put-token the SDKs sent parses (Node: string id, `to`/`reply-to`; Python: ulong id,
/// `https://` audience); the answer we build for it equals, section by section, the answer
/// the capture's server sent (correlation id of the request's type, int 200), and that answer
/// parses on the client side as answering the request.
#[test]
fn put_token_requests_and_answers() {
    let requests = transfers("client->server");
    let answers = transfers("server->client");
    let mut checked = 0;
    for (file, record, message) in requests.iter().filter(|(_, _, m)| is_put_token(m)) {
        let request = PutToken::parse(message).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(request.token_type, cbs::SAS_TOKEN_TYPE);
        assert!(request.token.starts_with("SharedAccessSignature sr="));
        let audience = CbsAudience::parse(&request.audience).unwrap();
        assert_eq!(audience.host, "localhost");
        if file.contains("python") {
            assert_eq!(request.message_id, Some(MessageId::Ulong(0)));
            assert_eq!(request.audience, "https://localhost");
        } else {
            assert!(matches!(request.message_id, Some(MessageId::String(_))));
            assert_eq!(request.reply_to.as_deref(), Some("cbs"));
            if file.contains("device") {
                assert_eq!(request.audience, "localhost%2Fdevices%2Fdev-vectors");
                assert_eq!(audience.device_id.as_deref(), Some("dev-vectors"));
            }
            // What we build for the same values is what Node sent (its empty header aside).
            let mut ours = PutToken::new(
                request.audience.clone(),
                request.token.clone(),
                request.message_id.clone().unwrap(),
            )
            .to_message();
            ours.header = message.header.clone();
            assert_eq!(&ours, message, "{file}: our put-token is Node's");
        }
        // The server's answer in the same flow.
        let flow = &record["flow"];
        let (_, _, answer_message) = answers
            .iter()
            .find(|(f, r, m)| f == file && r["flow"] == *flow && is_cbs_answer(m))
            .unwrap();
        let answer = PutTokenAnswer::parse(answer_message).unwrap();
        assert!(answer.is_success());
        assert!(answer.answers(request.message_id.as_ref().unwrap()));
        let ours = PutTokenAnswer::to(&request, 200, "OK");
        assert_eq!(ours.correlation_id, answer.correlation_id);
        if request.reply_to.is_some() {
            assert_eq!(&ours.to_message(), answer_message, "{file}: our answer");
        }
        checked += 1;
    }
    assert_eq!(checked, 5, "put-tokens in the capture");
}

/// The messages the SDKs sent (telemetry, C2D from both service SDKs) and the deliveries the
/// capture's server sent map to the IoT Hub model with every property, and what we write for
/// that model reads back the same.
#[test]
fn messages_map_both_ways() {
    let mut all = transfers("client->server");
    all.extend(transfers("server->client"));
    let mut mapped = 0;
    for (file, record, amqp) in &all {
        if is_put_token(amqp) || is_cbs_answer(amqp) {
            continue;
        }
        let message = from_amqp(amqp).unwrap_or_else(|e| panic!("{file} {record}: {e}"));
        assert_eq!(from_amqp(&to_amqp(&message)).as_ref(), Ok(&message));
        mapped += 1;
        let system = message.system_properties();
        match (system.message_id.as_deref(), record["direction"].as_str()) {
            // Node device telemetry.
            (Some("m-1"), Some("client->server")) if file.contains("device") => {
                assert_eq!(system.correlation_id.as_deref(), Some("c-1"));
                assert_eq!(
                    system.to.as_deref(),
                    Some("/devices/dev-vectors/messages/events")
                );
                assert_eq!(system.content_type.as_deref(), Some("application/json"));
                assert_eq!(system.content_encoding.as_deref(), Some("utf-8"));
                assert_eq!(message.property("k/1"), Some("v&=2"));
                assert_eq!(message.body().as_ref(), br#"{"temp":21}"#);
            }
            // Node and Python service C2D.
            (Some("m-1"), Some("client->server")) => {
                let to = Address::parse(system.to.as_deref().unwrap()).unwrap();
                assert_eq!(to.identity(), Some(("dev-vectors", None)));
                assert_eq!(message.property("k/1"), Some("v&=2"));
                assert_eq!(message.body().as_ref(), b"hello");
                if file.contains("node") {
                    assert_eq!(system.ack, Some(AckMode::Full));
                } else {
                    assert_eq!(system.ack, None, "Python sends no iothub-ack");
                    assert_eq!(system.content_type.as_deref(), Some("text/plain"));
                    assert_eq!(system.correlation_id.as_deref(), Some("c-1"));
                }
            }
            // C2D deliveries to the device (the capture's server, with the hub's stamps).
            (Some(id), Some("server->client")) if id.starts_with("c2d-") => {
                assert_eq!(system.user_id.as_deref(), Some("iothubowner"));
                assert_eq!(system.sequence_number, Some(1));
                assert_eq!(
                    system.enqueued_time.map(|t| t.unix_timestamp()),
                    Some(1_700_000_000)
                );
            }
            _ => {}
        }
        // The method request's uuid correlation id reads as the text Node answers with.
        if message.property("IoThub-methodname") == Some("reboot") {
            assert_eq!(
                system.correlation_id.as_deref(),
                Some("00112233-4455-6677-8899-aabbccddeeff")
            );
        }
        // Twin requests' annotations are kept by name.
        if let Some((_, op)) = system.other.iter().find(|(k, _)| k == "operation") {
            assert!(["GET", "PATCH"].contains(&op.as_str()));
        }
    }
    assert!(mapped >= 23, "only {mapped} messages mapped");
}
