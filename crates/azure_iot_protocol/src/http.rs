//! HTTP header names that carry message properties on IoT Hub's device HTTPS API (telemetry,
//! cloud-to-device receive) and their mapping to [`Message`].
//!
//! Names are written exactly in the lower-case spellings below (the C SDK compares response
//! headers case-sensitively) and read case-insensitively (the Node SDK sends `IoTHub-MessageId`).
//! Application properties travel as `iothub-app-{name}`. The HTTP `Content-Type` header is not
//! the message's content type; `iothub-contenttype` is.
//!
//! Header values must be visible ASCII for the HTTP stack to send them: a property value with
//! other characters is refused by the sender's HTTP library, not silently altered here.

use azure_iot_core::datetime::{format_timestamp, parse_timestamp};
use azure_iot_core::message::{AckMode, Message, MessageError, SystemProperties};
use bytes::Bytes;

/// Prefix of application-property headers.
pub const APP_PROPERTY_PREFIX: &str = "iothub-app-";
/// Message id.
pub const MESSAGE_ID: &str = "iothub-messageid";
/// Correlation id.
pub const CORRELATION_ID: &str = "iothub-correlationid";
/// User id.
pub const USER_ID: &str = "iothub-userid";
/// Destination.
pub const TO: &str = "iothub-to";
/// Absolute expiry (ISO 8601).
pub const EXPIRY: &str = "iothub-expiry";
/// Feedback request (`none`, `positive`, `negative`, `full`).
pub const ACK: &str = "iothub-ack";
/// Creation time (ISO 8601).
pub const CREATION_TIME: &str = "iothub-creationtimeutc";
/// Message content type.
pub const CONTENT_TYPE: &str = "iothub-contenttype";
/// Message content encoding.
pub const CONTENT_ENCODING: &str = "iothub-contentencoding";
/// Message schema.
pub const MESSAGE_SCHEMA: &str = "iothub-messageschema";
/// Interface id (security messages).
pub const INTERFACE_ID: &str = "iothub-interface-id";
/// Plug and Play component name (no `iothub-app-` prefix).
pub const COMPONENT_NAME: &str = "dt-subject";
/// Hub-assigned sequence number (C2D receive).
pub const SEQUENCE_NUMBER: &str = "iothub-sequencenumber";
/// Enqueued time (C2D receive).
pub const ENQUEUED_TIME: &str = "iothub-enqueuedtime";
/// Delivery count (C2D receive).
pub const DELIVERY_COUNT: &str = "iothub-deliverycount";
/// The C2D lock token travels in `ETag`, with double quotes.
pub const ETAG: &str = "etag";

/// The headers for `message`, system properties first, then `iothub-app-*`.
///
/// The lock token is written as `ETag: "{token}"`, quotes included, as the C SDK requires.
pub fn message_headers(message: &Message) -> Vec<(String, String)> {
    let s = message.system_properties();
    let mut out = Vec::new();
    let mut put = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            out.push((name.to_owned(), value));
        }
    };
    put(MESSAGE_ID, s.message_id.clone());
    put(CORRELATION_ID, s.correlation_id.clone());
    put(USER_ID, s.user_id.clone());
    put(TO, s.to.clone());
    put(EXPIRY, s.expiry_time_utc.map(format_timestamp));
    put(ACK, s.ack.map(|a| a.as_str().to_owned()));
    put(CREATION_TIME, s.creation_time_utc.map(format_timestamp));
    put(CONTENT_TYPE, s.content_type.clone());
    put(CONTENT_ENCODING, s.content_encoding.clone());
    put(MESSAGE_SCHEMA, s.message_schema.clone());
    put(INTERFACE_ID, s.interface_id.clone());
    put(COMPONENT_NAME, s.component_name.clone());
    put(SEQUENCE_NUMBER, s.sequence_number.map(|n| n.to_string()));
    put(ENQUEUED_TIME, s.enqueued_time.map(format_timestamp));
    put(DELIVERY_COUNT, s.delivery_count.map(|n| n.to_string()));
    put(ETAG, s.lock_token.as_ref().map(|t| format!("\"{t}\"")));
    for (name, value) in message.properties() {
        out.push((format!("{APP_PROPERTY_PREFIX}{name}"), value.clone()));
    }
    out
}

/// Builds a message from `body` and the property headers among `headers` (names compared
/// case-insensitively; unrelated headers such as `Authorization` are ignored).
///
/// A timestamp, number or ack value that does not parse is kept in
/// `SystemProperties::other` under its header name rather than failing the message.
pub fn message_from_headers<'h>(
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    body: impl Into<Bytes>,
) -> Result<Message, MessageError> {
    let mut system = SystemProperties::default();
    let mut builder = Message::builder(body);
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if let Some(app) = lower.strip_prefix(APP_PROPERTY_PREFIX) {
            // Keep the application name's original case.
            let original = &name[name.len() - app.len()..];
            builder = builder.property(original, value);
            continue;
        }
        let text = || Some(value.to_owned());
        let parsed = match lower.as_str() {
            MESSAGE_ID => set(&mut system.message_id, text()),
            CORRELATION_ID => set(&mut system.correlation_id, text()),
            USER_ID => set(&mut system.user_id, text()),
            TO => set(&mut system.to, text()),
            CONTENT_TYPE => set(&mut system.content_type, text()),
            CONTENT_ENCODING => set(&mut system.content_encoding, text()),
            MESSAGE_SCHEMA => set(&mut system.message_schema, text()),
            INTERFACE_ID => set(&mut system.interface_id, text()),
            COMPONENT_NAME => set(&mut system.component_name, text()),
            EXPIRY => set(&mut system.expiry_time_utc, parse_timestamp(value)),
            CREATION_TIME => set(&mut system.creation_time_utc, parse_timestamp(value)),
            ENQUEUED_TIME => set(&mut system.enqueued_time, parse_timestamp(value)),
            ACK => set(&mut system.ack, AckMode::parse(value)),
            SEQUENCE_NUMBER => set(&mut system.sequence_number, value.trim().parse().ok()),
            DELIVERY_COUNT => set(&mut system.delivery_count, value.trim().parse().ok()),
            ETAG => {
                let token = value.trim();
                let token = token
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .unwrap_or(token);
                set(&mut system.lock_token, Some(token.to_owned()))
            }
            _ => true,
        };
        if !parsed {
            // Keep what could not be parsed rather than failing the message.
            system.other.push((lower, value.to_owned()));
        }
    }
    builder.system_properties(system).build()
}

/// Stores `value` in `slot`; returns whether there was a value (false: it did not parse).
fn set<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    *slot = value;
    slot.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let t = parse_timestamp("2033-05-18T03:33:20Z").unwrap();
        let message = Message::builder("body")
            .message_id("m")
            .correlation_id("c")
            .user_id("u")
            .to("/devices/d/messages/deviceBound")
            .expiry_time_utc(t)
            .ack(AckMode::Positive)
            .creation_time_utc(t)
            .content_type("application/json")
            .content_encoding("utf-8")
            .message_schema("s")
            .security_message()
            .component_name("c1")
            .sequence_number(7)
            .enqueued_time(t)
            .delivery_count(2)
            .lock_token("lock-1")
            .property("Prop", "v")
            .build()
            .unwrap();
        let headers = message_headers(&message);
        assert!(headers.contains(&("etag".into(), "\"lock-1\"".into())));
        assert!(headers.contains(&("iothub-app-Prop".into(), "v".into())));
        let back = message_from_headers(
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            "body",
        )
        .unwrap();
        assert_eq!(back, message);
    }

    #[test]
    fn names_are_case_insensitive_and_unrelated_headers_ignored() {
        let m = message_from_headers(
            [
                ("IoTHub-MessageId", "m1"),
                ("IoTHub-App-Color", "red"),
                ("Content-Type", "application/octet-stream"),
                ("Authorization", "SharedAccessSignature sr=x"),
                ("iothub-expiry", "not a time"),
            ],
            "",
        )
        .unwrap();
        assert_eq!(m.system_properties().message_id.as_deref(), Some("m1"));
        assert_eq!(m.property("Color"), Some("red"));
        assert_eq!(m.properties().len(), 1);
        assert_eq!(m.system_properties().content_type, None);
        assert_eq!(
            m.system_properties().other,
            vec![("iothub-expiry".to_owned(), "not a time".to_owned())]
        );
    }
}
