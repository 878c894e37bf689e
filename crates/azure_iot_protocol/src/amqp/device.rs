//! The device twin and direct methods over AMQP, for both roles: the messages on the twin
//! link pair (`/devices/{d}[/modules/{m}]/twin`) and on the methods link pair
//! (`…/methods/devicebound`).
//!
//! * A twin request carries the annotations `operation` (`GET`, `PATCH`, `PUT`, `DELETE`)
//!   and, but for GET, `resource` (`/properties/reported`, or
//!   `/notifications/twin/properties/desired` to subscribe to desired patches), a
//!   correlation id, and a body in one data section (`" "` when there is nothing to say, as
//!   the Node and C SDKs send).
//! * Its answer echoes the correlation id, with the annotation `status` (an AMQP int, as C#
//!   and C read it), `version` (a long) after a reported patch, and the twin document for a
//!   GET. A desired-properties patch comes on the same link without a correlation id, with
//!   `resource` `/properties/desired` and its `version`.
//! * A method call carries the application property `IoThub-methodname` and a uuid
//!   correlation id (C# parses it as a GUID); the device answers with the same correlation
//!   id and `IoThub-status` (an int).

use fe2o3_amqp_types::messaging::annotations::OwnedKey;
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message, MessageAnnotations, MessageId,
    Properties,
};
use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Symbol, Value};

use super::AmqpMessage;

/// The twin operation annotation.
pub const OPERATION: &str = "operation";
/// The twin resource annotation.
pub const RESOURCE: &str = "resource";
/// The twin answer's status annotation.
pub const STATUS: &str = "status";
/// The twin version annotation.
pub const VERSION: &str = "version";
/// The resource that subscribes to (PUT) or unsubscribes from (DELETE) desired patches.
pub const DESIRED_NOTIFICATIONS: &str = "/notifications/twin/properties/desired";
/// The resource of reported properties (PATCH).
pub const REPORTED: &str = "/properties/reported";
/// The resource a desired-properties patch names.
pub const DESIRED: &str = "/properties/desired";
/// The method call's name (application property).
pub const METHOD_NAME: &str = "IoThub-methodname";
/// The method answer's status (application property).
pub const METHOD_STATUS: &str = "IoThub-status";

/// A twin request: `operation` on `resource` with `body`, correlated by `correlation`.
pub fn twin_request(
    correlation: MessageId,
    operation: &str,
    resource: Option<&str>,
    body: &[u8],
) -> AmqpMessage {
    let mut annotations = MessageAnnotations::default();
    annotate(
        &mut annotations,
        OPERATION,
        Value::String(operation.to_owned()),
    );
    if let Some(resource) = resource {
        annotate(
            &mut annotations,
            RESOURCE,
            Value::String(resource.to_owned()),
        );
    }
    // The hub's twin link expects a body; the SDKs send a blank when there is none.
    let body = if body.is_empty() {
        b" ".as_slice()
    } else {
        body
    };
    Message::builder()
        .properties(Properties {
            correlation_id: Some(correlation),
            ..Default::default()
        })
        .message_annotations(annotations)
        .body(data(body.to_vec()))
        .build()
}

/// A message on the twin receiver link: an answer (`correlation` and `status`) or a desired
/// patch (no correlation, `resource` and `version`).
pub fn twin_message(
    correlation: Option<MessageId>,
    status: Option<i32>,
    version: Option<(&str, i64)>,
    body: Option<Vec<u8>>,
) -> AmqpMessage {
    let mut annotations = MessageAnnotations::default();
    if let Some(status) = status {
        annotate(&mut annotations, STATUS, Value::Int(status));
    }
    if let Some((resource, version)) = version {
        if !resource.is_empty() {
            annotate(
                &mut annotations,
                RESOURCE,
                Value::String(resource.to_owned()),
            );
        }
        annotate(&mut annotations, VERSION, Value::Long(version));
    }
    Message::builder()
        .properties(Properties {
            correlation_id: correlation,
            ..Default::default()
        })
        .message_annotations(annotations)
        .body(body.map_or(Body::Empty, data))
        .build()
}

/// A direct method call to the device.
pub fn method_request(correlation: MessageId, name: &str, payload: Vec<u8>) -> AmqpMessage {
    Message::builder()
        .properties(Properties {
            correlation_id: Some(correlation),
            ..Default::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert(METHOD_NAME, SimpleValue::String(name.to_owned()))
                .build(),
        )
        .body(data(payload))
        .build()
}

/// The device's answer to the method call `correlation`.
pub fn method_response(correlation: MessageId, status: i32, payload: Vec<u8>) -> AmqpMessage {
    Message::builder()
        .properties(Properties {
            correlation_id: Some(correlation),
            ..Default::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert(METHOD_STATUS, SimpleValue::Int(status))
                .build(),
        )
        .body(data(payload))
        .build()
}

/// A method answer's status (any integer type, or digits), if it has one.
pub fn method_status(answer: &AmqpMessage) -> Option<i32> {
    let value = answer
        .application_properties
        .as_ref()
        .and_then(|props| props.get(METHOD_STATUS))?;
    match value {
        SimpleValue::Int(v) => Some(*v),
        SimpleValue::Long(v) => i32::try_from(*v).ok(),
        SimpleValue::Uint(v) => i32::try_from(*v).ok(),
        SimpleValue::Short(v) => Some(i32::from(*v)),
        SimpleValue::String(v) => v.parse().ok(),
        _ => None,
    }
}

/// A method call's name.
pub fn method_name(request: &AmqpMessage) -> Option<&str> {
    match request
        .application_properties
        .as_ref()
        .and_then(|props| props.get(METHOD_NAME))?
    {
        SimpleValue::String(name) => Some(name),
        SimpleValue::Symbol(name) => Some(name.as_str()),
        _ => None,
    }
}

/// A message annotation's text (a string or a symbol).
pub fn annotation_text(message: &AmqpMessage, name: &str) -> Option<String> {
    match annotation(message, name)? {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A message annotation's integer value, whatever its AMQP integer type (the SDKs differ:
/// `status` is an int, `version` a long), or digits.
pub fn annotation_number(message: &AmqpMessage, name: &str) -> Option<i64> {
    match annotation(message, name)? {
        Value::Int(v) => Some(i64::from(*v)),
        Value::Long(v) => Some(*v),
        Value::Uint(v) => Some(i64::from(*v)),
        Value::Ulong(v) => i64::try_from(*v).ok(),
        Value::Short(v) => Some(i64::from(*v)),
        Value::Ushort(v) => Some(i64::from(*v)),
        Value::Byte(v) => Some(i64::from(*v)),
        Value::Ubyte(v) => Some(i64::from(*v)),
        Value::String(v) => v.parse().ok(),
        _ => None,
    }
}

fn annotation<'m>(message: &'m AmqpMessage, name: &str) -> Option<&'m Value> {
    message
        .message_annotations
        .as_ref()?
        .get(&OwnedKey::Symbol(Symbol::from(name)))
}

/// A message's body bytes: its data sections joined, or an `amqp-value` string or binary;
/// nothing for any other body.
pub fn data_bytes(message: &AmqpMessage) -> Vec<u8> {
    match &message.body {
        Body::Data(sections) => sections.iter().flat_map(|d| d.0.iter().copied()).collect(),
        Body::Value(AmqpValue(Value::String(s))) => s.clone().into_bytes(),
        Body::Value(AmqpValue(Value::Binary(b))) => b.to_vec(),
        _ => Vec::new(),
    }
}

fn annotate(annotations: &mut MessageAnnotations, name: &str, value: Value) {
    annotations.insert(OwnedKey::Symbol(Symbol::from(name)), value);
}

fn data(bytes: Vec<u8>) -> Body<Value> {
    Body::Data(vec![Data(Binary::from(bytes))].into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_twin_request_reads_back() {
        let request = twin_request(
            MessageId::String("c1".into()),
            "PATCH",
            Some(REPORTED),
            br#"{"a":1}"#,
        );
        assert_eq!(
            annotation_text(&request, OPERATION).as_deref(),
            Some("PATCH")
        );
        assert_eq!(
            annotation_text(&request, RESOURCE).as_deref(),
            Some(REPORTED)
        );
        assert_eq!(data_bytes(&request), br#"{"a":1}"#);
        let get = twin_request(MessageId::String("c2".into()), "GET", None, b"");
        assert_eq!(data_bytes(&get), b" ");
        assert_eq!(annotation_text(&get, RESOURCE), None);
    }

    #[test]
    fn a_twin_answer_reads_back() {
        let answer = twin_message(
            Some(MessageId::String("c1".into())),
            Some(204),
            Some(("", 7)),
            None,
        );
        assert_eq!(annotation_number(&answer, STATUS), Some(204));
        assert_eq!(annotation_number(&answer, VERSION), Some(7));
        assert_eq!(annotation_text(&answer, RESOURCE), None);
        assert!(data_bytes(&answer).is_empty());
    }

    #[test]
    fn a_method_call_and_answer_read_back() {
        let id = MessageId::Uuid(fe2o3_amqp_types::primitives::Uuid::from([7u8; 16]));
        let call = method_request(id.clone(), "reboot", b"{}".to_vec());
        assert_eq!(method_name(&call), Some("reboot"));
        let answer = method_response(id, 404, b"null".to_vec());
        assert_eq!(method_status(&answer), Some(404));
        assert_eq!(data_bytes(&answer), b"null");
    }

    proptest! {
        #[test]
        fn any_annotation_value_reads_without_panicking(n in any::<i64>(), s in ".{0,20}") {
            let mut annotations = MessageAnnotations::default();
            annotate(&mut annotations, STATUS, Value::Long(n));
            annotate(&mut annotations, VERSION, Value::String(s.clone()));
            let message: AmqpMessage = Message::builder()
                .message_annotations(annotations)
                .body(Body::Empty)
                .build();
            prop_assert_eq!(annotation_number(&message, STATUS), Some(n));
            prop_assert_eq!(annotation_number(&message, VERSION), s.parse().ok());
            prop_assert_eq!(annotation_text(&message, VERSION), Some(s));
        }
    }
}
