//! What a partition receiver yields: [`ReceivedEvent`], read from the AMQP message the
//! endpoint delivers, with every property and annotation kept in its AMQP type
//! ([`PropertyValue`]).
//!
//! Where IoT Hub puts what (next-transports.md §5.3):
//!
//! * the *properties* section: `message-id`, `correlation-id`, `user-id`, `to`,
//!   `content-type`, `content-encoding`, creation and expiry times;
//! * *application properties*: the device's own properties, with their AMQP types
//!   (plus `iothub-creation-time-utc` and the like when the device set them);
//! * *message annotations*: what Event Hubs stamps (`x-opt-sequence-number` long,
//!   `x-opt-offset` string, `x-opt-enqueued-time` timestamp, `x-opt-partition-key`) and what
//!   IoT Hub stamps (`iothub-connection-device-id`, `iothub-connection-module-id`,
//!   `iothub-connection-auth-method`, `iothub-connection-auth-generation-id`,
//!   `iothub-enqueuedtime`, `iothub-message-source`, `dt-dataschema`, `dt-subject`, …).

use azure_iot_protocol::amqp::{AmqpMessage, message_id_text};
use fe2o3_amqp_types::messaging::annotations::OwnedKey;
use fe2o3_amqp_types::messaging::{AmqpValue, Body};
use fe2o3_amqp_types::primitives::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, ErrorKind, Result};

/// The typed value of a property or annotation (defined in `azure_iot_protocol`, shared with
/// the emulator).
pub use azure_iot_protocol::amqp::PropertyValue;

/// `x-opt-sequence-number`: the event's sequence number in its partition (AMQP long).
pub const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
/// `x-opt-offset`: the event's offset in its partition (AMQP string).
pub const OFFSET: &str = "x-opt-offset";
/// `x-opt-enqueued-time`: when Event Hubs stored the event (AMQP timestamp).
pub const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
/// `x-opt-partition-key`: the partition key, when one was given.
pub const PARTITION_KEY: &str = "x-opt-partition-key";
/// `iothub-connection-device-id`: the device that sent the message.
pub const DEVICE_ID: &str = "iothub-connection-device-id";
/// `iothub-connection-module-id`: the module that sent it, if a module did.
pub const MODULE_ID: &str = "iothub-connection-module-id";
/// `iothub-message-source`: `Telemetry`, `twinChangeEvents`, `deviceLifecycleEvents`,
/// `deviceConnectionStateEvents`, …
pub const MESSAGE_SOURCE: &str = "iothub-message-source";
/// `iothub-enqueuedtime`: when IoT Hub received the message.
pub const HUB_ENQUEUED_TIME: &str = "iothub-enqueuedtime";

/// One event read from a partition of the Event Hubs-compatible endpoint.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReceivedEvent {
    /// The partition it was read from.
    pub partition_id: String,
    /// The body (the data sections joined; an `amqp-value` string or binary as its bytes).
    pub body: Vec<u8>,
    /// `message-id`, as text.
    pub message_id: Option<String>,
    /// `correlation-id`, as text.
    pub correlation_id: Option<String>,
    /// `user-id`, as (lossy UTF-8) text.
    pub user_id: Option<String>,
    /// `content-type` (`application/json` …).
    pub content_type: Option<String>,
    /// `content-encoding` (`utf-8` …).
    pub content_encoding: Option<String>,
    /// Every field of the AMQP *properties* section that is set, by its AMQP name
    /// (`message-id`, `to`, `creation-time`, …): what `az iot hub monitor-events` shows as
    /// system properties next to the IoT Hub annotations.
    pub system_properties: Vec<(String, PropertyValue)>,
    /// The application properties, in order, with their AMQP types.
    pub application_properties: Vec<(String, PropertyValue)>,
    /// Every message annotation (symbol keys), in order, with its AMQP type.
    pub annotations: Vec<(String, PropertyValue)>,
    /// `x-opt-sequence-number`.
    pub sequence_number: i64,
    /// `x-opt-offset`.
    pub offset: Option<String>,
    /// `x-opt-enqueued-time`.
    pub enqueued_time: Option<OffsetDateTime>,
}

impl ReceivedEvent {
    /// The annotation `name`, if present.
    pub fn annotation(&self, name: &str) -> Option<&PropertyValue> {
        self.annotations
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The application property `name`, if present.
    pub fn property(&self, name: &str) -> Option<&PropertyValue> {
        self.application_properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// `iothub-connection-device-id`: the device that sent it.
    pub fn device_id(&self) -> Option<&str> {
        self.annotation(DEVICE_ID).and_then(PropertyValue::as_str)
    }

    /// `iothub-connection-module-id`: the module that sent it, if a module did.
    pub fn module_id(&self) -> Option<&str> {
        self.annotation(MODULE_ID).and_then(PropertyValue::as_str)
    }

    /// `iothub-message-source` (`Telemetry`, `twinChangeEvents`, …).
    pub fn message_source(&self) -> Option<&str> {
        self.annotation(MESSAGE_SOURCE)
            .and_then(PropertyValue::as_str)
    }

    /// `x-opt-partition-key`.
    pub fn partition_key(&self) -> Option<&str> {
        self.annotation(PARTITION_KEY)
            .and_then(PropertyValue::as_str)
    }

    /// `iothub-enqueuedtime`: when IoT Hub received the message.
    pub fn hub_enqueued_time(&self) -> Option<OffsetDateTime> {
        match self.annotation(HUB_ENQUEUED_TIME)? {
            PropertyValue::Timestamp(at) => Some(*at),
            PropertyValue::String(s) => OffsetDateTime::parse(s, &Rfc3339).ok(),
            _ => None,
        }
    }

    /// The body as UTF-8 text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Reads a delivered message of `partition_id`. Fails only when the message lacks the
    /// sequence number every Event Hubs event carries (a reconnect could not resume).
    pub(crate) fn from_amqp(partition_id: &str, message: &AmqpMessage) -> Result<Self> {
        let body = match &message.body {
            Body::Data(sections) => sections.iter().flat_map(|d| d.0.iter().copied()).collect(),
            Body::Value(AmqpValue(Value::String(s))) => s.clone().into_bytes(),
            Body::Value(AmqpValue(Value::Binary(b))) => b.to_vec(),
            Body::Value(AmqpValue(Value::Null)) | Body::Empty => Vec::new(),
            Body::Value(AmqpValue(other)) => format!("{other:?}").into_bytes(),
            Body::Sequence(sequences) => format!("{sequences:?}").into_bytes(),
        };
        let mut system_properties = Vec::new();
        let (mut message_id, mut correlation_id, mut user_id) = (None, None, None);
        let (mut content_type, mut content_encoding) = (None, None);
        if let Some(p) = &message.properties {
            let mut put = |name: &str, value: PropertyValue| {
                system_properties.push((name.to_owned(), value));
            };
            if let Some(id) = &p.message_id {
                message_id = Some(message_id_text(id));
                put("message-id", PropertyValue::String(message_id_text(id)));
            }
            if let Some(user) = &p.user_id {
                user_id = Some(String::from_utf8_lossy(user).into_owned());
                put("user-id", PropertyValue::Binary(user.to_vec()));
            }
            if let Some(to) = &p.to {
                put("to", PropertyValue::String(to.clone()));
            }
            if let Some(subject) = &p.subject {
                put("subject", PropertyValue::String(subject.clone()));
            }
            if let Some(reply_to) = &p.reply_to {
                put("reply-to", PropertyValue::String(reply_to.clone()));
            }
            if let Some(id) = &p.correlation_id {
                correlation_id = Some(message_id_text(id));
                put("correlation-id", PropertyValue::String(message_id_text(id)));
            }
            if let Some(ct) = &p.content_type {
                content_type = Some(ct.as_str().to_owned());
                put(
                    "content-type",
                    PropertyValue::Symbol(ct.as_str().to_owned()),
                );
            }
            if let Some(ce) = &p.content_encoding {
                content_encoding = Some(ce.as_str().to_owned());
                put(
                    "content-encoding",
                    PropertyValue::Symbol(ce.as_str().to_owned()),
                );
            }
            if let Some(at) = &p.absolute_expiry_time {
                put(
                    "absolute-expiry-time",
                    PropertyValue::from_amqp(&Value::Timestamp(at.clone())),
                );
            }
            if let Some(at) = &p.creation_time {
                put(
                    "creation-time",
                    PropertyValue::from_amqp(&Value::Timestamp(at.clone())),
                );
            }
            if let Some(group) = &p.group_id {
                put("group-id", PropertyValue::String(group.clone()));
            }
        }
        let application_properties = message
            .application_properties
            .iter()
            .flat_map(|p| p.iter())
            .map(|(k, v)| (k.clone(), PropertyValue::from_amqp(&Value::from(v.clone()))))
            .collect();
        let annotations: Vec<(String, PropertyValue)> = message
            .message_annotations
            .iter()
            .flat_map(|a| a.iter())
            .filter_map(|(k, v)| match k {
                OwnedKey::Symbol(k) => Some((k.as_str().to_owned(), PropertyValue::from_amqp(v))),
                _ => None,
            })
            .collect();
        let find = |name: &str| annotations.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let sequence_number = match find(SEQUENCE_NUMBER) {
            Some(PropertyValue::Long(n)) => *n,
            Some(PropertyValue::Int(n)) => i64::from(*n),
            Some(PropertyValue::Ulong(n)) => i64::try_from(*n).unwrap_or(i64::MAX),
            Some(PropertyValue::Uint(n)) => i64::from(*n),
            _ => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "an event of partition {partition_id} carries no integer {SEQUENCE_NUMBER} annotation"
                    ),
                ));
            }
        };
        let offset = find(OFFSET).map(|v| v.to_string());
        let enqueued_time = match find(ENQUEUED_TIME) {
            Some(PropertyValue::Timestamp(at)) => Some(*at),
            _ => None,
        };
        Ok(Self {
            partition_id: partition_id.to_owned(),
            body,
            message_id,
            correlation_id,
            user_id,
            content_type,
            content_encoding,
            system_properties,
            application_properties,
            annotations,
            sequence_number,
            offset,
            enqueued_time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::messaging::{
        ApplicationProperties, Data, Message, MessageAnnotations, Properties,
    };
    use fe2o3_amqp_types::primitives::{Binary, Symbol, Timestamp};

    fn delivered() -> AmqpMessage {
        Message::builder()
            .properties(
                Properties::builder()
                    .message_id(String::from("m-1"))
                    .correlation_id(String::from("c-1"))
                    .content_type(Symbol::from("application/json"))
                    .content_encoding(Symbol::from("utf-8"))
                    .build(),
            )
            .application_properties(
                ApplicationProperties::builder()
                    .insert("temperature", 21.5f64)
                    .insert("count", 3i32)
                    .insert("alert", true)
                    .insert("name", "kitchen")
                    .build(),
            )
            .message_annotations(
                MessageAnnotations::builder()
                    .insert(SEQUENCE_NUMBER, Value::Long(42))
                    .insert(OFFSET, Value::String("8192".into()))
                    .insert(
                        ENQUEUED_TIME,
                        Value::Timestamp(Timestamp::from_milliseconds(1_700_000_000_000)),
                    )
                    .insert(DEVICE_ID, Value::String("sensor-1".into()))
                    .insert(MESSAGE_SOURCE, Value::String("Telemetry".into()))
                    .build(),
            )
            .body(Body::Data(
                vec![Data(Binary::from(b"{\"t\":1}".to_vec()))].into(),
            ))
            .build()
    }

    #[test]
    fn every_part_is_read_with_its_type() {
        let event = ReceivedEvent::from_amqp("3", &delivered()).unwrap();
        assert_eq!(event.partition_id, "3");
        assert_eq!(event.body_text(), "{\"t\":1}");
        assert_eq!(event.message_id.as_deref(), Some("m-1"));
        assert_eq!(event.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(event.content_type.as_deref(), Some("application/json"));
        assert_eq!(event.content_encoding.as_deref(), Some("utf-8"));
        assert_eq!(event.sequence_number, 42);
        assert_eq!(event.offset.as_deref(), Some("8192"));
        assert_eq!(
            event.enqueued_time.map(|t| t.unix_timestamp()),
            Some(1_700_000_000)
        );
        assert_eq!(event.device_id(), Some("sensor-1"));
        assert_eq!(event.module_id(), None);
        assert_eq!(event.message_source(), Some("Telemetry"));
        assert_eq!(
            event.property("temperature"),
            Some(&PropertyValue::Double(21.5))
        );
        assert_eq!(event.property("count"), Some(&PropertyValue::Int(3)));
        assert_eq!(event.property("alert"), Some(&PropertyValue::Bool(true)));
        assert_eq!(
            event.property("name"),
            Some(&PropertyValue::String("kitchen".into()))
        );
        assert_eq!(
            event
                .annotation(SEQUENCE_NUMBER)
                .map(PropertyValue::type_name),
            Some("long")
        );
        assert!(
            event
                .system_properties
                .iter()
                .any(|(k, v)| k == "message-id" && v.as_str() == Some("m-1"))
        );
    }

    #[test]
    fn an_event_without_a_sequence_number_is_a_protocol_error() {
        let mut message = delivered();
        message.message_annotations = None;
        let err = ReceivedEvent::from_amqp("0", &message).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol);
    }

    #[test]
    fn json_keeps_numbers_and_writes_times_as_text() {
        assert_eq!(PropertyValue::Long(-5).to_json(), serde_json::json!(-5));
        assert_eq!(PropertyValue::Bool(true).to_json(), serde_json::json!(true));
        let at = OffsetDateTime::from_unix_timestamp(0).unwrap();
        assert_eq!(
            PropertyValue::Timestamp(at).to_json(),
            serde_json::json!("1970-01-01T00:00:00Z")
        );
    }
}
