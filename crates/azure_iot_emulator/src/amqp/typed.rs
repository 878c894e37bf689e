//! Typed application properties between the telemetry log ([`PropertyValue`]) and AMQP
//! ([`SimpleValue`]): what a device sent over AMQP is stored with its type and served to
//! Event Hubs consumers with the same type.

use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Uuid};

use crate::telemetry::PropertyValue;

/// The AMQP value of a stored property.
pub(crate) fn to_simple(value: &PropertyValue) -> SimpleValue {
    match value {
        PropertyValue::Null => SimpleValue::Null,
        PropertyValue::Bool(v) => SimpleValue::Bool(*v),
        PropertyValue::UByte(v) => SimpleValue::Ubyte(*v),
        PropertyValue::UShort(v) => SimpleValue::Ushort(*v),
        PropertyValue::UInt(v) => SimpleValue::Uint(*v),
        PropertyValue::ULong(v) => SimpleValue::Ulong(*v),
        PropertyValue::Byte(v) => SimpleValue::Byte(*v),
        PropertyValue::Short(v) => SimpleValue::Short(*v),
        PropertyValue::Int(v) => SimpleValue::Int(*v),
        PropertyValue::Long(v) => SimpleValue::Long(*v),
        PropertyValue::Float(v) => SimpleValue::from(*v),
        PropertyValue::Double(v) => SimpleValue::from(*v),
        PropertyValue::Char(v) => SimpleValue::Char(*v),
        PropertyValue::Timestamp(ms) => SimpleValue::Timestamp(Timestamp::from_milliseconds(*ms)),
        PropertyValue::Uuid(bytes) => SimpleValue::Uuid(Uuid::from(*bytes)),
        PropertyValue::Binary(v) => SimpleValue::Binary(Binary::from(v.clone())),
        PropertyValue::String(v) => SimpleValue::String(v.clone()),
        PropertyValue::Symbol(v) => SimpleValue::Symbol(Symbol::from(v.as_str())),
    }
}

/// The stored form of an AMQP application property; `None` for the types the log does not
/// keep (decimals, described values), which are then stored as text.
pub(crate) fn from_simple(value: &SimpleValue) -> Option<PropertyValue> {
    Some(match value {
        SimpleValue::Null => PropertyValue::Null,
        SimpleValue::Bool(v) => PropertyValue::Bool(*v),
        SimpleValue::Ubyte(v) => PropertyValue::UByte(*v),
        SimpleValue::Ushort(v) => PropertyValue::UShort(*v),
        SimpleValue::Uint(v) => PropertyValue::UInt(*v),
        SimpleValue::Ulong(v) => PropertyValue::ULong(*v),
        SimpleValue::Byte(v) => PropertyValue::Byte(*v),
        SimpleValue::Short(v) => PropertyValue::Short(*v),
        SimpleValue::Int(v) => PropertyValue::Int(*v),
        SimpleValue::Long(v) => PropertyValue::Long(*v),
        SimpleValue::Float(v) => PropertyValue::Float(v.into_inner()),
        SimpleValue::Double(v) => PropertyValue::Double(v.into_inner()),
        SimpleValue::Char(v) => PropertyValue::Char(*v),
        SimpleValue::Timestamp(t) => PropertyValue::Timestamp(t.milliseconds()),
        SimpleValue::Uuid(u) => PropertyValue::Uuid(*u.as_inner()),
        SimpleValue::Binary(b) => PropertyValue::Binary(b.to_vec()),
        SimpleValue::String(s) => PropertyValue::String(s.clone()),
        SimpleValue::Symbol(s) => PropertyValue::Symbol(s.as_str().to_owned()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_type_round_trips() {
        let values = [
            PropertyValue::Null,
            PropertyValue::Bool(true),
            PropertyValue::UByte(1),
            PropertyValue::UShort(2),
            PropertyValue::UInt(3),
            PropertyValue::ULong(4),
            PropertyValue::Byte(-1),
            PropertyValue::Short(-2),
            PropertyValue::Int(-3),
            PropertyValue::Long(-4),
            PropertyValue::Float(1.5),
            PropertyValue::Double(2.5),
            PropertyValue::Char('x'),
            PropertyValue::Timestamp(1_700_000_000_000),
            PropertyValue::Uuid([7; 16]),
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
