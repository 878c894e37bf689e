//! Typed application properties between the telemetry log ([`PropertyValue`]) and AMQP
//! ([`SimpleValue`]): what a device sent over AMQP is stored with its type and served to
//! Event Hubs consumers with the same type.

use fe2o3_amqp_types::primitives::{SimpleValue, Value};

use crate::telemetry::PropertyValue;

/// The AMQP value of a stored property.
pub(crate) fn to_simple(value: &PropertyValue) -> SimpleValue {
    value.to_amqp()
}

/// The stored form of an AMQP application property; `None` for the types the log does not
/// keep (decimals, described values, timestamps out of range), which are then stored as text.
pub(crate) fn from_simple(value: &SimpleValue) -> Option<PropertyValue> {
    match PropertyValue::from_amqp(&Value::from(value.clone())) {
        PropertyValue::Other(_) => None,
        typed => Some(typed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_type_round_trips() {
        let values = [
            PropertyValue::Null,
            PropertyValue::Bool(true),
            PropertyValue::Ubyte(1),
            PropertyValue::Ushort(2),
            PropertyValue::Uint(3),
            PropertyValue::Ulong(4),
            PropertyValue::Byte(-1),
            PropertyValue::Short(-2),
            PropertyValue::Int(-3),
            PropertyValue::Long(-4),
            PropertyValue::Float(1.5),
            PropertyValue::Double(2.5),
            PropertyValue::Char('x'),
            PropertyValue::Timestamp(
                time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            ),
            PropertyValue::Uuid(uuid::Uuid::from_bytes([7; 16])),
            PropertyValue::Binary(vec![1, 2, 3]),
            PropertyValue::String("s".into()),
            PropertyValue::Symbol("sym".into()),
        ];
        for value in values {
            assert_eq!(
                from_simple(&to_simple(&value)),
                Some(value.clone()),
                "{value:?}"
            );
        }
    }
}
