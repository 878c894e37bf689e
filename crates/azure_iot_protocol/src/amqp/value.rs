//! A typed AMQP property value ([`PropertyValue`]): what application properties and message
//! annotations carry, kept in its AMQP type. One definition for the emulator (which stores
//! and serves the types a device sent) and the service client (which reads them back from
//! the Event Hubs-compatible endpoint).

use std::fmt;

use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A property or annotation value in its AMQP type.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PropertyValue {
    /// `null`.
    Null,
    /// `boolean`.
    Bool(bool),
    /// `ubyte`.
    Ubyte(u8),
    /// `ushort`.
    Ushort(u16),
    /// `uint`.
    Uint(u32),
    /// `ulong`.
    Ulong(u64),
    /// `byte`.
    Byte(i8),
    /// `short`.
    Short(i16),
    /// `int`.
    Int(i32),
    /// `long`.
    Long(i64),
    /// `float`.
    Float(f32),
    /// `double`.
    Double(f64),
    /// `char`.
    Char(char),
    /// `timestamp` (milliseconds since the Unix epoch).
    Timestamp(OffsetDateTime),
    /// `uuid`.
    Uuid(uuid::Uuid),
    /// `binary`.
    Binary(Vec<u8>),
    /// `string`.
    String(String),
    /// `symbol`.
    Symbol(String),
    /// Anything else (decimals, lists, maps, described values), in a debug form.
    Other(String),
}

impl PropertyValue {
    /// The AMQP type's name (`string`, `long`, `timestamp`, `bool`, …), spelt as the
    /// emulator's telemetry log tags them.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "bool",
            Self::Ubyte(_) => "ubyte",
            Self::Ushort(_) => "ushort",
            Self::Uint(_) => "uint",
            Self::Ulong(_) => "ulong",
            Self::Byte(_) => "byte",
            Self::Short(_) => "short",
            Self::Int(_) => "int",
            Self::Long(_) => "long",
            Self::Float(_) => "float",
            Self::Double(_) => "double",
            Self::Char(_) => "char",
            Self::Timestamp(_) => "timestamp",
            Self::Uuid(_) => "uuid",
            Self::Binary(_) => "binary",
            Self::String(_) => "string",
            Self::Symbol(_) => "symbol",
            Self::Other(_) => "other",
        }
    }

    /// The text of a string or symbol.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) | Self::Symbol(s) => Some(s),
            _ => None,
        }
    }

    /// The JSON form: numbers and booleans as themselves, timestamps as RFC 3339 text,
    /// binary as lossy UTF-8 text, the rest as text.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Self::Null => J::Null,
            Self::Bool(b) => J::Bool(*b),
            Self::Ubyte(n) => J::from(*n),
            Self::Ushort(n) => J::from(*n),
            Self::Uint(n) => J::from(*n),
            Self::Ulong(n) => J::from(*n),
            Self::Byte(n) => J::from(*n),
            Self::Short(n) => J::from(*n),
            Self::Int(n) => J::from(*n),
            Self::Long(n) => J::from(*n),
            Self::Float(n) => J::from(*n),
            Self::Double(n) => J::from(*n),
            other => J::String(other.to_string()),
        }
    }

    /// The AMQP value (an [`Other`](Self::Other) as its text, a string).
    pub fn to_amqp(&self) -> SimpleValue {
        match self {
            Self::Null => SimpleValue::Null,
            Self::Bool(v) => SimpleValue::Bool(*v),
            Self::Ubyte(v) => SimpleValue::Ubyte(*v),
            Self::Ushort(v) => SimpleValue::Ushort(*v),
            Self::Uint(v) => SimpleValue::Uint(*v),
            Self::Ulong(v) => SimpleValue::Ulong(*v),
            Self::Byte(v) => SimpleValue::Byte(*v),
            Self::Short(v) => SimpleValue::Short(*v),
            Self::Int(v) => SimpleValue::Int(*v),
            Self::Long(v) => SimpleValue::Long(*v),
            Self::Float(v) => SimpleValue::from(*v),
            Self::Double(v) => SimpleValue::from(*v),
            Self::Char(v) => SimpleValue::Char(*v),
            Self::Timestamp(at) => SimpleValue::Timestamp(Timestamp::from_milliseconds(
                i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
            )),
            Self::Uuid(u) => {
                SimpleValue::Uuid(fe2o3_amqp_types::primitives::Uuid::from(*u.as_bytes()))
            }
            Self::Binary(v) => SimpleValue::Binary(Binary::from(v.clone())),
            Self::String(v) | Self::Other(v) => SimpleValue::String(v.clone()),
            Self::Symbol(v) => SimpleValue::Symbol(Symbol::from(v.as_str())),
        }
    }

    /// The value of an AMQP value: its own type where it has one here; decimals, lists, maps,
    /// described values and timestamps out of range as [`Other`](Self::Other) text.
    pub fn from_amqp(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Ubyte(n) => Self::Ubyte(*n),
            Value::Ushort(n) => Self::Ushort(*n),
            Value::Uint(n) => Self::Uint(*n),
            Value::Ulong(n) => Self::Ulong(*n),
            Value::Byte(n) => Self::Byte(*n),
            Value::Short(n) => Self::Short(*n),
            Value::Int(n) => Self::Int(*n),
            Value::Long(n) => Self::Long(*n),
            Value::Float(n) => Self::Float(n.into_inner()),
            Value::Double(n) => Self::Double(n.into_inner()),
            Value::Char(c) => Self::Char(*c),
            Value::Timestamp(t) => {
                match OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(t.milliseconds()) * 1_000_000,
                ) {
                    Ok(at) => Self::Timestamp(at),
                    Err(_) => Self::Other(format!("timestamp {}", t.milliseconds())),
                }
            }
            Value::Uuid(u) => Self::Uuid(uuid::Uuid::from_bytes(*u.as_inner())),
            Value::Binary(b) => Self::Binary(b.to_vec()),
            Value::String(s) => Self::String(s.clone()),
            Value::Symbol(s) => Self::Symbol(s.as_str().to_owned()),
            other => Self::Other(format!("{other:?}")),
        }
    }
}

impl fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => Ok(()),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Ubyte(n) => write!(f, "{n}"),
            Self::Ushort(n) => write!(f, "{n}"),
            Self::Uint(n) => write!(f, "{n}"),
            Self::Ulong(n) => write!(f, "{n}"),
            Self::Byte(n) => write!(f, "{n}"),
            Self::Short(n) => write!(f, "{n}"),
            Self::Int(n) => write!(f, "{n}"),
            Self::Long(n) => write!(f, "{n}"),
            Self::Float(n) => write!(f, "{n}"),
            Self::Double(n) => write!(f, "{n}"),
            Self::Char(c) => write!(f, "{c}"),
            Self::Timestamp(at) => match at.format(&Rfc3339) {
                Ok(text) => f.write_str(&text),
                Err(_) => write!(f, "{at}"),
            },
            Self::Uuid(u) => write!(f, "{u}"),
            Self::Binary(b) => f.write_str(&String::from_utf8_lossy(b)),
            Self::String(s) | Self::Symbol(s) | Self::Other(s) => f.write_str(s),
        }
    }
}

impl From<&str> for PropertyValue {
    fn from(v: &str) -> Self {
        Self::String(v.to_owned())
    }
}

impl From<String> for PropertyValue {
    fn from(v: String) -> Self {
        Self::String(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_through_amqp() {
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
                OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_000_000).unwrap(),
            ),
            PropertyValue::Uuid(uuid::Uuid::from_bytes([7; 16])),
            PropertyValue::Binary(vec![0, 1]),
            PropertyValue::String("s".into()),
            PropertyValue::Symbol("y".into()),
        ];
        for value in values {
            let back = PropertyValue::from_amqp(&Value::from(value.to_amqp()));
            assert_eq!(back, value);
        }
    }
}
