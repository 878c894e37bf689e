//! MQTT property bags: the `key=value&key=value` tail of telemetry, cloud-to-device and
//! module-input topics that carries a message's properties.
//!
//! # Writing
//! [`PropertyBag::from_message`] writes system properties first, in the Python SDK's order
//! (`$.on $.mid $.cid $.uid $.ct $.ce $.ifid $.exp`, then the rest), then application
//! properties in insertion order. Keys and values are percent-encoded with
//! [`encode_component`], so `$.mid` goes out as `%24.mid` (the only form the C SDK recognises),
//! `/` as `%2F` (parsers split topics on `/`) and space as `%20`, never `+`. Timestamps use
//! the .NET round-trip format, the only one the C# SDK parses.
//!
//! # Reading
//! [`PropertyBag::parse`] is total and tolerant, because the official SDKs disagree:
//! * pairs split on `&`, each at its first `=`; a pair without `=` has no value (`None`);
//!   empty pairs are skipped;
//! * keys and values are percent-decoded once; invalid escapes (the C SDK sends values
//!   un-encoded by default) and `+` stay literal;
//! * both `%24.mid` and the Java SDK's raw `$.mid` are system properties;
//! * one trailing `/` (the Node and C# SDKs add it) is stripped by the topic parser.
//!
//! [`PropertyBag::to_message`] maps the pairs onto [`Message`]: known `$.` keys and `iothub-ack`
//! become system properties, unknown `$.` keys are kept in `SystemProperties::other`, everything
//! else is an application property. A timestamp that does not parse is kept in `other` rather
//! than failing the message.

use azure_iot_core::datetime::{format_timestamp, parse_timestamp};
use azure_iot_core::encoding::{decode_component, encode_component};
use azure_iot_core::message::{AckMode, Message, MessageBuilder, MessageError, SystemProperties};
use bytes::Bytes;

/// `$.mid`: message id.
pub const MESSAGE_ID: &str = "$.mid";
/// `$.cid`: correlation id.
pub const CORRELATION_ID: &str = "$.cid";
/// `$.uid`: user id.
pub const USER_ID: &str = "$.uid";
/// `$.to`: destination.
pub const TO: &str = "$.to";
/// `$.ct`: content type.
pub const CONTENT_TYPE: &str = "$.ct";
/// `$.ce`: content encoding.
pub const CONTENT_ENCODING: &str = "$.ce";
/// `$.exp`: absolute expiry time.
pub const EXPIRY_TIME: &str = "$.exp";
/// `$.ctime`: creation time.
pub const CREATION_TIME: &str = "$.ctime";
/// `$.on`: output name.
pub const OUTPUT_NAME: &str = "$.on";
/// `$.ifid`: interface id.
pub const INTERFACE_ID: &str = "$.ifid";
/// `$.sub`: Plug and Play component name.
pub const COMPONENT_NAME: &str = "$.sub";
/// `$.schema`: message schema.
pub const MESSAGE_SCHEMA: &str = "$.schema";
/// `$.cdid`: connection device id.
pub const CONNECTION_DEVICE_ID: &str = "$.cdid";
/// `$.cmid`: connection module id.
pub const CONNECTION_MODULE_ID: &str = "$.cmid";
/// `$.diagid`: distributed tracing id.
pub const DIAGNOSTIC_ID: &str = "$.diagid";
/// `$.diagctx`: distributed tracing context.
pub const DIAGNOSTIC_CONTEXT: &str = "$.diagctx";
/// `iothub-ack`: cloud-to-device feedback request (no `$.` prefix on the wire).
pub const ACK: &str = "iothub-ack";

/// The decoded pairs of a property bag, in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertyBag {
    pairs: Vec<(String, Option<String>)>,
}

impl PropertyBag {
    /// An empty bag.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a pair (decoded text; encoding happens in [`format`](Self::format)).
    pub fn push(&mut self, key: impl Into<String>, value: Option<String>) {
        self.pairs.push((key.into(), value));
    }

    /// Inserts a pair at `index` (at the end if `index` is past it).
    pub fn insert(&mut self, index: usize, key: impl Into<String>, value: Option<String>) {
        let index = index.min(self.pairs.len());
        self.pairs.insert(index, (key.into(), value));
    }

    /// The pairs in order. A `None` value is a key written without `=`.
    pub fn pairs(&self) -> &[(String, Option<String>)] {
        &self.pairs
    }

    /// The first value for `key` (`Some(None)` for a key without `=`).
    pub fn get(&self, key: &str) -> Option<Option<&str>> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref())
    }

    /// Whether the bag has no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Parses the bag text (everything after `.../events/`, `.../devicebound/` ...). Never
    /// fails; see the [module docs](self) for the tolerance rules.
    pub fn parse(text: &str) -> Self {
        let pairs = text
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) => (
                    decode_component(k).into_owned(),
                    Some(decode_component(v).into_owned()),
                ),
                None => (decode_component(pair).into_owned(), None),
            })
            .collect();
        Self { pairs }
    }

    /// Writes the bag text, percent-encoding every key and value.
    pub fn format(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.pairs {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(&encode_component(key));
            if let Some(value) = value {
                out.push('=');
                out.push_str(&encode_component(value));
            }
        }
        out
    }

    /// The bag for `message`: system properties first, then application properties.
    ///
    /// Hub-stamped properties that only travel hub → service (enqueued time, sequence number,
    /// delivery count, lock token, auth method) are not written.
    pub fn from_message(message: &Message) -> Self {
        let s = message.system_properties();
        let mut bag = Self::new();
        let mut put = |key: &str, value: Option<&str>| {
            if let Some(value) = value {
                bag.push(key, Some(value.to_owned()));
            }
        };
        let exp = s.expiry_time_utc.map(format_timestamp);
        let ctime = s.creation_time_utc.map(format_timestamp);
        put(OUTPUT_NAME, s.output_name.as_deref());
        put(MESSAGE_ID, s.message_id.as_deref());
        put(CORRELATION_ID, s.correlation_id.as_deref());
        put(USER_ID, s.user_id.as_deref());
        put(CONTENT_TYPE, s.content_type.as_deref());
        put(CONTENT_ENCODING, s.content_encoding.as_deref());
        put(INTERFACE_ID, s.interface_id.as_deref());
        put(EXPIRY_TIME, exp.as_deref());
        put(TO, s.to.as_deref());
        put(CREATION_TIME, ctime.as_deref());
        put(COMPONENT_NAME, s.component_name.as_deref());
        put(MESSAGE_SCHEMA, s.message_schema.as_deref());
        put(CONNECTION_DEVICE_ID, s.connection_device_id.as_deref());
        put(CONNECTION_MODULE_ID, s.connection_module_id.as_deref());
        put(DIAGNOSTIC_ID, s.diagnostic_id.as_deref());
        put(DIAGNOSTIC_CONTEXT, s.diagnostic_context.as_deref());
        put(ACK, s.ack.map(AckMode::as_str));
        for (key, value) in &s.other {
            bag.push(format!("$.{key}"), Some(value.clone()));
        }
        for (key, value) in message.properties() {
            bag.push(key.clone(), Some(value.clone()));
        }
        bag
    }

    /// Builds a message with `body` and this bag's properties (see the [module docs](self)).
    ///
    /// Fails only as [`MessageBuilder::build`] does: over 256 KiB, or an application property
    /// with an empty name (`=value` in the bag).
    pub fn to_message(&self, body: impl Into<Bytes>) -> Result<Message, MessageError> {
        let mut system = SystemProperties::default();
        let mut builder = Message::builder(body);
        for (key, value) in &self.pairs {
            let text = value.clone().unwrap_or_default();
            builder = match apply_system(&mut system, key, text) {
                Applied::Yes => builder,
                Applied::No(text) => builder.property(key.clone(), text),
            };
        }
        // Application properties were added to the builder; system ones go in at the end.
        let builder: MessageBuilder = builder.system_properties(system);
        builder.build()
    }
}

enum Applied {
    Yes,
    No(String),
}

/// Puts `key = text` into `system` if `key` is a system property.
fn apply_system(system: &mut SystemProperties, key: &str, text: String) -> Applied {
    let slot = match key {
        MESSAGE_ID => &mut system.message_id,
        CORRELATION_ID => &mut system.correlation_id,
        USER_ID => &mut system.user_id,
        TO => &mut system.to,
        CONTENT_TYPE => &mut system.content_type,
        CONTENT_ENCODING => &mut system.content_encoding,
        OUTPUT_NAME => &mut system.output_name,
        INTERFACE_ID => &mut system.interface_id,
        COMPONENT_NAME => &mut system.component_name,
        MESSAGE_SCHEMA => &mut system.message_schema,
        CONNECTION_DEVICE_ID => &mut system.connection_device_id,
        CONNECTION_MODULE_ID => &mut system.connection_module_id,
        DIAGNOSTIC_ID => &mut system.diagnostic_id,
        DIAGNOSTIC_CONTEXT => &mut system.diagnostic_context,
        EXPIRY_TIME | CREATION_TIME => {
            let target = if key == EXPIRY_TIME {
                &mut system.expiry_time_utc
            } else {
                &mut system.creation_time_utc
            };
            match parse_timestamp(&text) {
                Some(t) => *target = Some(t),
                None => system.other.push((key[2..].to_owned(), text)),
            }
            return Applied::Yes;
        }
        ACK => {
            match AckMode::parse(&text) {
                Some(mode) => system.ack = Some(mode),
                None => system.other.push((ACK.to_owned(), text)),
            }
            return Applied::Yes;
        }
        _ => {
            if let Some(name) = key.strip_prefix("$.") {
                system.other.push((name.to_owned(), text));
                return Applied::Yes;
            }
            return Applied::No(text);
        }
    };
    *slot = Some(text);
    Applied::Yes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_follows_the_tolerance_rules() {
        let bag = PropertyBag::parse("%24.mid=m1&$.cid=c1&flag&empty=&&a%zz=b+c&k=v=w");
        assert_eq!(
            bag.pairs(),
            &[
                ("$.mid".into(), Some("m1".into())),
                ("$.cid".into(), Some("c1".into())),
                ("flag".into(), None),
                ("empty".into(), Some(String::new())),
                ("a%zz".into(), Some("b+c".into())),
                ("k".into(), Some("v=w".into())),
            ]
        );
        assert_eq!(bag.get("flag"), Some(None));
        assert!(PropertyBag::parse("").is_empty());
    }

    #[test]
    fn format_encodes_everything_reserved() {
        let mut bag = PropertyBag::new();
        bag.push("$.to", Some("/devices/d/messages/deviceBound".into()));
        bag.push("k &=/", Some("v+%ü".into()));
        bag.push("flag", None);
        assert_eq!(
            bag.format(),
            "%24.to=%2Fdevices%2Fd%2Fmessages%2FdeviceBound&k%20%26%3D%2F=v%2B%25%C3%BC&flag"
        );
    }

    #[test]
    fn message_mapping_covers_every_system_property() {
        let t = parse_timestamp("2033-05-18T03:33:20Z").unwrap();
        let message = Message::builder("x")
            .output_name("out1")
            .message_id("m")
            .correlation_id("c")
            .user_id("u")
            .content_type("application/json")
            .content_encoding("utf-8")
            .security_message()
            .expiry_time_utc(t)
            .to("/devices/d/messages/deviceBound")
            .creation_time_utc(t)
            .component_name("thermostat1")
            .message_schema("s")
            .connection_device_id("d")
            .connection_module_id("m")
            .diagnostic_id("di")
            .diagnostic_context("creationtimeutc=x")
            .ack(AckMode::Full)
            .other_system_property("future", "1")
            .property("p1", "v1")
            .build()
            .unwrap();
        let bag = PropertyBag::from_message(&message);
        let text = bag.format();
        assert!(text.starts_with("%24.on=out1&%24.mid=m&%24.cid=c&%24.uid=u&%24.ct=application%2Fjson&%24.ce=utf-8&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1&%24.exp=2033-05-18T03%3A33%3A20.0000000Z&"), "{text}");
        assert!(
            text.ends_with("&iothub-ack=full&%24.future=1&p1=v1"),
            "{text}"
        );
        let back = PropertyBag::parse(&text).to_message("x").unwrap();
        assert_eq!(back, message);
    }

    #[test]
    fn bad_timestamps_and_ack_values_are_kept_not_fatal() {
        let m = PropertyBag::parse("%24.exp=tomorrow&iothub-ack=maybe&%24.x=1")
            .to_message("")
            .unwrap();
        let s = m.system_properties();
        assert_eq!(s.expiry_time_utc, None);
        assert_eq!(
            s.other,
            vec![
                ("exp".into(), "tomorrow".into()),
                ("iothub-ack".into(), "maybe".into()),
                ("x".into(), "1".into())
            ]
        );
    }

    #[test]
    fn empty_key_is_a_typed_error() {
        assert_eq!(
            PropertyBag::parse("=v").to_message("").unwrap_err(),
            MessageError::EmptyPropertyName
        );
    }

    proptest! {
        #[test]
        fn format_parse_round_trip(pairs in proptest::collection::vec(
            ("\\PC{1,12}", proptest::option::of("\\PC{0,12}")), 0..8)
        ) {
            let mut bag = PropertyBag::new();
            for (k, v) in &pairs {
                bag.push(k.clone(), v.clone());
            }
            let text = bag.format();
            prop_assert!(!text.contains('/') && !text.contains('+') && !text.contains(' '));
            prop_assert_eq!(PropertyBag::parse(&text), bag);
        }

        #[test]
        fn parse_and_map_never_panic(text in "\\PC*") {
            let _ = PropertyBag::parse(&text).to_message(Bytes::new());
        }
    }
}
