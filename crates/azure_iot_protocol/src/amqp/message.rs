//! [`azure_iot_core::Message`] to and from AMQP 1.0 messages, both directions, for every
//! role (service C2D sends, hub deliveries, device telemetry).
//!
//! # Design
//!
//! | IoT Hub property | AMQP location |
//! |---|---|
//! | message id, correlation id | properties `message-id`, `correlation-id` (read: string, uuid, ulong or binary) |
//! | user id | properties `user-id` (binary, UTF-8) |
//! | to | properties `to` |
//! | content type / encoding | properties `content-type` / `content-encoding` (symbols) |
//! | expiry | properties `absolute-expiry-time` |
//! | creation time | application property `iothub-creation-time-utc` (ISO 8601); read also from properties `creation-time` |
//! | ack, output name, message schema | application properties `iothub-ack`, `iothub-outputname`, `iothub-message-schema` |
//! | interface id, component, diagnostics | message annotations `iothub-interface-id`, `dt-subject`, `Diagnostic-Id`, `Correlation-Context` |
//! | hub stamps | message annotations `iothub-enqueuedtime` (timestamp), `x-opt-sequence-number` (ulong), `iothub-deliverycount` (ubyte), `x-opt-lock-token`, `x-opt-input-name`, `iothub-connection-device-id`, `iothub-connection-module-id`, `iothub-connection-auth-method` |
//! | other system properties | message annotations by name (string values) |
//! | application properties | application properties (string values) |
//! | body | one `data` section |
//!
//! Writing is exact (the types the SDKs read: C# reads the delivery count as a byte and the
//! sequence number as a ulong). Reading is liberal and total, as the hub must be: ids of any
//! AMQP type become text (a uuid as lower-case hyphenated text), application-property values
//! of any simple type become text, the body may be data sections, an `amqp-value` string or
//! binary, or absent; anything else is a typed [`MappingError`].

use azure_iot_core::datetime::{format_timestamp, parse_timestamp};
use azure_iot_core::message::{AckMode, Message, MessageError, SystemProperties};
use fe2o3_amqp_types::messaging::annotations::OwnedKey;
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, MessageAnnotations, MessageId, Properties,
};
use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};
use time::OffsetDateTime;

use super::AmqpMessage;

/// Application property: the feedback a C2D sender asks for.
pub const ACK: &str = "iothub-ack";
/// Application property: a module message's output name.
pub const OUTPUT_NAME: &str = "iothub-outputname";
/// Application property: the message schema.
pub const MESSAGE_SCHEMA: &str = "iothub-message-schema";
/// Application property: the creation time (ISO 8601).
pub const CREATION_TIME: &str = "iothub-creation-time-utc";
/// Annotation: the interface id (security messages).
pub const INTERFACE_ID: &str = "iothub-interface-id";
/// Annotation: the Plug and Play component.
pub const COMPONENT: &str = "dt-subject";
/// Annotation: distributed tracing id.
pub const DIAGNOSTIC_ID: &str = "Diagnostic-Id";
/// Annotation: distributed tracing context.
pub const DIAGNOSTIC_CONTEXT: &str = "Correlation-Context";
/// Annotation: when the hub enqueued the message (timestamp).
pub const ENQUEUED_TIME: &str = "iothub-enqueuedtime";
/// Annotation: the hub's sequence number (ulong).
pub const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
/// Annotation: how often a C2D message was delivered (ubyte).
pub const DELIVERY_COUNT: &str = "iothub-deliverycount";
/// Annotation: a C2D message's lock token.
pub const LOCK_TOKEN: &str = "x-opt-lock-token";
/// Annotation: the module input a message was delivered to.
pub const INPUT_NAME: &str = "x-opt-input-name";
/// Annotation: the sending device.
pub const CONNECTION_DEVICE_ID: &str = "iothub-connection-device-id";
/// Annotation: the sending module.
pub const CONNECTION_MODULE_ID: &str = "iothub-connection-module-id";
/// Annotation: how the sender authenticated.
pub const CONNECTION_AUTH_METHOD: &str = "iothub-connection-auth-method";

/// Why an AMQP message is not an IoT Hub message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MappingError {
    /// The body is neither data sections, an `amqp-value` string or binary, nor absent.
    #[error("the message body is {0}; IoT Hub messages carry a data section")]
    Body(&'static str),
    /// `iothub-ack` is not `none`, `positive`, `negative` or `full`.
    #[error("iothub-ack `{0}` is not none, positive, negative or full")]
    Ack(String),
    /// A time property is out of range or not a time.
    #[error("`{0}` is not a valid time")]
    Time(&'static str),
    /// The message breaks a rule of the message model (size, property names).
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// An AMQP message id (or correlation id) as text: strings as they are, a uuid as
/// lower-case hyphenated text, a ulong in decimal, binary as UTF-8 (lossy).
pub fn message_id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid_text(u.as_inner()),
        MessageId::Binary(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

fn uuid_text(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A simple value as text: strings and symbols as they are, numbers and booleans in their
/// usual form, null as empty, anything else in a debug form.
pub fn simple_text(value: &SimpleValue) -> String {
    match value {
        SimpleValue::Null => String::new(),
        SimpleValue::String(s) => s.clone(),
        SimpleValue::Symbol(s) => s.as_str().to_owned(),
        SimpleValue::Bool(b) => b.to_string(),
        SimpleValue::Ubyte(n) => n.to_string(),
        SimpleValue::Ushort(n) => n.to_string(),
        SimpleValue::Uint(n) => n.to_string(),
        SimpleValue::Ulong(n) => n.to_string(),
        SimpleValue::Byte(n) => n.to_string(),
        SimpleValue::Short(n) => n.to_string(),
        SimpleValue::Int(n) => n.to_string(),
        SimpleValue::Long(n) => n.to_string(),
        SimpleValue::Uuid(u) => uuid_text(u.as_inner()),
        SimpleValue::Timestamp(t) => time_from_millis(t.milliseconds())
            .map(format_timestamp)
            .unwrap_or_else(|| t.milliseconds().to_string()),
        SimpleValue::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    }
}

/// An annotation value as text (as [`simple_text`]).
fn value_text(value: &Value) -> String {
    match SimpleValue::try_from(value.clone()) {
        Ok(simple) => simple_text(&simple),
        Err(_) => format!("{value:?}"),
    }
}

fn time_from_millis(millis: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).ok()
}

fn timestamp(at: OffsetDateTime) -> Timestamp {
    let millis = at.unix_timestamp_nanos() / 1_000_000;
    Timestamp::from_milliseconds(i64::try_from(millis).unwrap_or(i64::MAX))
}

/// The AMQP form of `message` (see the module docs for where each property goes).
pub fn to_amqp(message: &Message) -> AmqpMessage {
    let system = message.system_properties();
    let mut properties = Properties::builder();
    if let Some(id) = &system.message_id {
        properties = properties.message_id(id.clone());
    }
    if let Some(id) = &system.correlation_id {
        properties = properties.correlation_id(id.clone());
    }
    if let Some(user) = &system.user_id {
        properties = properties.user_id(Binary::from(user.as_bytes().to_vec()));
    }
    if let Some(to) = &system.to {
        properties = properties.to(to.clone());
    }
    if let Some(value) = &system.content_type {
        properties = properties.content_type(Symbol::from(value.as_str()));
    }
    if let Some(value) = &system.content_encoding {
        properties = properties.content_encoding(Symbol::from(value.as_str()));
    }
    if let Some(at) = system.expiry_time_utc {
        properties = properties.absolute_expiry_time(timestamp(at));
    }

    let mut application = ApplicationProperties::default();
    for (name, value) in message.properties() {
        application.insert(name.clone(), SimpleValue::String(value.clone()));
    }
    let mut app = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            application.insert(name.to_owned(), SimpleValue::String(value));
        }
    };
    app(ACK, system.ack.map(|a| a.as_str().to_owned()));
    app(OUTPUT_NAME, system.output_name.clone());
    app(MESSAGE_SCHEMA, system.message_schema.clone());
    app(
        CREATION_TIME,
        system.creation_time_utc.map(format_timestamp),
    );

    let mut annotations = MessageAnnotations::default();
    let mut note = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            annotations.insert(OwnedKey::Symbol(Symbol::from(name)), value);
        }
    };
    let text = |value: &Option<String>| value.clone().map(Value::String);
    note(INTERFACE_ID, text(&system.interface_id));
    note(COMPONENT, text(&system.component_name));
    note(DIAGNOSTIC_ID, text(&system.diagnostic_id));
    note(DIAGNOSTIC_CONTEXT, text(&system.diagnostic_context));
    note(
        ENQUEUED_TIME,
        system.enqueued_time.map(|t| Value::Timestamp(timestamp(t))),
    );
    note(SEQUENCE_NUMBER, system.sequence_number.map(Value::Ulong));
    note(
        DELIVERY_COUNT,
        system
            .delivery_count
            .map(|n| Value::Ubyte(u8::try_from(n).unwrap_or(u8::MAX))),
    );
    note(LOCK_TOKEN, text(&system.lock_token));
    note(INPUT_NAME, text(&system.input_name));
    note(CONNECTION_DEVICE_ID, text(&system.connection_device_id));
    note(CONNECTION_MODULE_ID, text(&system.connection_module_id));
    note(CONNECTION_AUTH_METHOD, text(&system.connection_auth_method));
    for (name, value) in &system.other {
        note(name, Some(Value::String(value.clone())));
    }

    let mut builder =
        fe2o3_amqp_types::messaging::Message::builder().properties(properties.build());
    if !annotations.is_empty() {
        builder = builder.message_annotations(annotations);
    }
    if !application.is_empty() {
        builder = builder.application_properties(application);
    }
    builder
        .body(Body::Data(
            vec![Data(Binary::from(message.body().to_vec()))].into(),
        ))
        .build()
}

/// The IoT Hub message an AMQP message carries (see the module docs).
pub fn from_amqp(amqp: &AmqpMessage) -> Result<Message, MappingError> {
    let body: Vec<u8> = match &amqp.body {
        Body::Data(sections) => sections.iter().flat_map(|d| d.0.iter().copied()).collect(),
        Body::Value(AmqpValue(Value::String(s))) => s.clone().into_bytes(),
        Body::Value(AmqpValue(Value::Binary(b))) => b.to_vec(),
        Body::Value(AmqpValue(Value::Null)) | Body::Empty => Vec::new(),
        Body::Value(_) => return Err(MappingError::Body("an amqp-value other than text")),
        Body::Sequence(_) => return Err(MappingError::Body("an amqp-sequence")),
    };
    let mut system = SystemProperties::default();
    let mut user: Vec<(String, String)> = Vec::new();
    if let Some(p) = &amqp.properties {
        system.message_id = p.message_id.as_ref().map(message_id_text);
        system.correlation_id = p.correlation_id.as_ref().map(message_id_text);
        system.user_id = p
            .user_id
            .as_ref()
            .map(|u| String::from_utf8_lossy(u).into_owned());
        system.to = p.to.clone();
        system.content_type = p.content_type.as_ref().map(|s| s.as_str().to_owned());
        system.content_encoding = p.content_encoding.as_ref().map(|s| s.as_str().to_owned());
        if let Some(at) = &p.absolute_expiry_time {
            system.expiry_time_utc = Some(
                time_from_millis(at.milliseconds())
                    .ok_or(MappingError::Time("absolute-expiry-time"))?,
            );
        }
        if let Some(at) = &p.creation_time {
            system.creation_time_utc = Some(
                time_from_millis(at.milliseconds()).ok_or(MappingError::Time("creation-time"))?,
            );
        }
    }
    for (name, value) in amqp.application_properties.iter().flat_map(|p| p.iter()) {
        let text = simple_text(value);
        match name.as_str() {
            ACK => system.ack = Some(AckMode::parse(&text).ok_or(MappingError::Ack(text))?),
            OUTPUT_NAME => system.output_name = Some(text),
            MESSAGE_SCHEMA => system.message_schema = Some(text),
            CREATION_TIME => {
                system.creation_time_utc =
                    Some(parse_timestamp(&text).ok_or(MappingError::Time(CREATION_TIME))?);
            }
            _ => user.push((name.clone(), text)),
        }
    }
    for (key, value) in amqp.message_annotations.iter().flat_map(|a| a.iter()) {
        let OwnedKey::Symbol(key) = key else { continue };
        let text = || value_text(value);
        match key.as_str() {
            INTERFACE_ID => system.interface_id = Some(text()),
            COMPONENT => system.component_name = Some(text()),
            DIAGNOSTIC_ID => system.diagnostic_id = Some(text()),
            DIAGNOSTIC_CONTEXT => system.diagnostic_context = Some(text()),
            ENQUEUED_TIME => system.enqueued_time = Some(annotation_time(value)?),
            SEQUENCE_NUMBER => system.sequence_number = annotation_number(value),
            DELIVERY_COUNT => {
                system.delivery_count =
                    annotation_number(value).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
            }
            LOCK_TOKEN => system.lock_token = Some(text()),
            INPUT_NAME => system.input_name = Some(text()),
            CONNECTION_DEVICE_ID => system.connection_device_id = Some(text()),
            CONNECTION_MODULE_ID => system.connection_module_id = Some(text()),
            CONNECTION_AUTH_METHOD => system.connection_auth_method = Some(text()),
            other => system.other.push((other.to_owned(), text())),
        }
    }
    let mut builder = Message::builder(body).system_properties(system);
    for (name, value) in user {
        builder = builder.property(name, value);
    }
    Ok(builder.build()?)
}

/// An annotation time: a timestamp, or ISO 8601 text.
fn annotation_time(value: &Value) -> Result<OffsetDateTime, MappingError> {
    match value {
        Value::Timestamp(t) => time_from_millis(t.milliseconds()),
        Value::String(s) => parse_timestamp(s),
        _ => None,
    }
    .ok_or(MappingError::Time(ENQUEUED_TIME))
}

/// A non-negative integer annotation of any integer type.
fn annotation_number(value: &Value) -> Option<u64> {
    match value {
        Value::Ubyte(n) => Some(u64::from(*n)),
        Value::Ushort(n) => Some(u64::from(*n)),
        Value::Uint(n) => Some(u64::from(*n)),
        Value::Ulong(n) => Some(*n),
        Value::Byte(n) => u64::try_from(*n).ok(),
        Value::Short(n) => u64::try_from(*n).ok(),
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::Long(n) => u64::try_from(*n).ok(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).unwrap()
    }

    #[test]
    fn every_property_round_trips() {
        let message = Message::builder("hello")
            .message_id("m-1")
            .correlation_id("c-1")
            .user_id("uid")
            .to("/devices/d1/messages/devicebound")
            .content_type("application/json")
            .content_encoding("utf-8")
            .expiry_time_utc(at(2_000_000_000))
            .creation_time_utc(at(1_700_000_000))
            .ack(AckMode::Full)
            .output_name("out1")
            .message_schema("schema")
            .interface_id("urn:x")
            .component_name("thermostat1")
            .diagnostic_id("diag")
            .diagnostic_context("ctx")
            .enqueued_time(at(1_700_000_001))
            .sequence_number(42)
            .delivery_count(3)
            .lock_token("lock")
            .input_name("in1")
            .connection_device_id("d1")
            .connection_module_id("m1")
            .connection_auth_method("{}")
            .other_system_property("x-opt-custom", "v")
            .property("k/1", "v&=2")
            .property("empty", "")
            .build()
            .unwrap();
        let amqp = to_amqp(&message);
        assert_eq!(from_amqp(&amqp), Ok(message));
        // The types the SDKs read.
        let notes = amqp.message_annotations.unwrap();
        let note = |k: &str| notes.get(&OwnedKey::Symbol(Symbol::from(k))).cloned();
        assert_eq!(note(DELIVERY_COUNT), Some(Value::Ubyte(3)));
        assert_eq!(note(SEQUENCE_NUMBER), Some(Value::Ulong(42)));
        assert!(matches!(note(ENQUEUED_TIME), Some(Value::Timestamp(_))));
        let props = amqp.properties.unwrap();
        assert_eq!(props.content_type, Some(Symbol::from("application/json")));
        assert_eq!(props.user_id, Some(Binary::from(b"uid".to_vec())));
        assert_eq!(
            amqp.application_properties.unwrap().get(ACK),
            Some(&SimpleValue::String("full".into()))
        );
    }

    #[test]
    fn ids_of_every_type_become_text() {
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&(0u8..16).map(|b| b * 17).collect::<Vec<_>>());
        assert_eq!(
            message_id_text(&MessageId::Uuid(uuid.into())),
            "00112233-4455-6677-8899-aabbccddeeff"
        );
        assert_eq!(message_id_text(&MessageId::Ulong(0)), "0");
        assert_eq!(
            message_id_text(&MessageId::Binary(b"b".to_vec().into())),
            "b"
        );
    }

    #[test]
    fn bad_messages_are_typed_errors() {
        let base = to_amqp(&Message::new("x").unwrap());
        let mut sequence = base.clone();
        sequence.body = Body::Value(AmqpValue(Value::Int(5)));
        assert!(matches!(from_amqp(&sequence), Err(MappingError::Body(_))));
        let mut ack = base.clone();
        ack.application_properties = Some(
            ApplicationProperties::builder()
                .insert(ACK, "sometimes")
                .build(),
        );
        assert_eq!(from_amqp(&ack), Err(MappingError::Ack("sometimes".into())));
        let mut reserved = base.clone();
        reserved.application_properties = Some(
            ApplicationProperties::builder()
                .insert("$.mid", "x")
                .build(),
        );
        assert!(matches!(
            from_amqp(&reserved),
            Err(MappingError::Message(_))
        ));
        let mut far = base;
        far.properties = Some(
            Properties::builder()
                .absolute_expiry_time(Timestamp::from_milliseconds(i64::MAX))
                .build(),
        );
        assert_eq!(
            from_amqp(&far),
            Err(MappingError::Time("absolute-expiry-time"))
        );
    }

    proptest! {
        #[test]
        fn any_properties_map_without_panicking(
            props in proptest::collection::vec((".{0,12}", ".{0,12}"), 0..6),
            notes in proptest::collection::vec((".{0,20}", any::<i64>()), 0..6),
            expiry in any::<i64>(),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut application = ApplicationProperties::default();
            for (k, v) in props {
                application.insert(k, SimpleValue::String(v));
            }
            let mut annotations = MessageAnnotations::default();
            for (k, v) in notes {
                annotations.insert(OwnedKey::Symbol(Symbol::from(k)), Value::Long(v));
            }
            let amqp = fe2o3_amqp_types::messaging::Message::builder()
                .properties(
                    Properties::builder()
                        .absolute_expiry_time(Timestamp::from_milliseconds(expiry))
                        .build(),
                )
                .message_annotations(annotations)
                .application_properties(application)
                .body(Body::Data(vec![Data(body.into())].into()))
                .build();
            if let Ok(message) = from_amqp(&amqp) {
                // What was read writes back to the same message.
                prop_assert_eq!(from_amqp(&to_amqp(&message)), Ok(message));
            }
        }
    }
}
