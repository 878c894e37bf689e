//! The log's neutral, typed encoding of message properties.
//!
//! Application properties are a list of `(name, PropertyValue)`: whatever an AMQP sender put in
//! its application-properties section keeps its type (an `int` stays an `int`), and MQTT's
//! string properties are [`PropertyValue::String`]. They are stored as a JSON array of
//! `{"n": name, "t": type tag, "v": value}` objects (no `v` for `null`):
//!
//! | tag | value in JSON |
//! |---|---|
//! | `null` | — |
//! | `bool` | `true` / `false` |
//! | `ubyte` `ushort` `uint` `ulong` `byte` `short` `int` `long` | a JSON integer (exact, 64-bit) |
//! | `float` `double` | a JSON number; `"NaN"`, `"Infinity"`, `"-Infinity"` when not finite |
//! | `char` | a one-character string |
//! | `timestamp` | milliseconds since the Unix epoch (AMQP's timestamp) |
//! | `uuid` | the hyphenated lower-case form |
//! | `binary` | standard base64 |
//! | `string` `symbol` | the text |
//!
//! System properties (message id, content type ...) are a JSON object under IoT Hub's names
//! (`messageId`, `contentType`, `expiryTimeUtc` as ISO 8601 ...); the hub-stamped ones
//! (connection device and module, auth method, enqueued time, sequence number) are columns.

use azure_iot_core::datetime::{format_timestamp, parse_timestamp};
use azure_iot_core::message::{AckMode, SystemProperties};
use base64::Engine as _;
use serde_json::{Map, Value, json};

/// A typed message property value: what AMQP application properties can carry (except the
/// decimal types, which have no exact representation here).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PropertyValue {
    /// AMQP `null`.
    Null,
    /// `boolean`.
    Bool(bool),
    /// `ubyte`.
    UByte(u8),
    /// `ushort`.
    UShort(u16),
    /// `uint`.
    UInt(u32),
    /// `ulong`.
    ULong(u64),
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
    /// `timestamp`: milliseconds since the Unix epoch.
    Timestamp(i64),
    /// `uuid`, as its 16 bytes.
    Uuid([u8; 16]),
    /// `binary`.
    Binary(Vec<u8>),
    /// `string` (also every MQTT property value).
    String(String),
    /// `symbol`.
    Symbol(String),
}

impl PropertyValue {
    /// The type tag stored with the value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "bool",
            Self::UByte(_) => "ubyte",
            Self::UShort(_) => "ushort",
            Self::UInt(_) => "uint",
            Self::ULong(_) => "ulong",
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
        }
    }

    /// The value as text, for string-only consumers (MQTT property bags, the monitor's
    /// `properties` map): numbers in decimal, timestamps in ISO 8601, binary in base64,
    /// `null` as the empty string.
    pub fn to_text(&self) -> String {
        match self {
            Self::Null => String::new(),
            Self::Bool(v) => v.to_string(),
            Self::UByte(v) => v.to_string(),
            Self::UShort(v) => v.to_string(),
            Self::UInt(v) => v.to_string(),
            Self::ULong(v) => v.to_string(),
            Self::Byte(v) => v.to_string(),
            Self::Short(v) => v.to_string(),
            Self::Int(v) => v.to_string(),
            Self::Long(v) => v.to_string(),
            Self::Float(v) => v.to_string(),
            Self::Double(v) => v.to_string(),
            Self::Char(v) => v.to_string(),
            Self::Timestamp(ms) => timestamp_from_ms(*ms)
                .map(format_timestamp)
                .unwrap_or_else(|| ms.to_string()),
            Self::Uuid(bytes) => format_uuid(bytes),
            Self::Binary(v) => base64::engine::general_purpose::STANDARD.encode(v),
            Self::String(v) | Self::Symbol(v) => v.clone(),
        }
    }

    /// The value as the JSON the log stores (without its tag).
    pub(crate) fn to_json(&self) -> Value {
        fn float(v: f64) -> Value {
            if v.is_nan() {
                json!("NaN")
            } else if v.is_infinite() {
                json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
            } else {
                json!(v)
            }
        }
        match self {
            Self::Null => Value::Null,
            Self::Bool(v) => json!(v),
            Self::UByte(v) => json!(v),
            Self::UShort(v) => json!(v),
            Self::UInt(v) => json!(v),
            Self::ULong(v) => json!(v),
            Self::Byte(v) => json!(v),
            Self::Short(v) => json!(v),
            Self::Int(v) => json!(v),
            Self::Long(v) => json!(v),
            Self::Float(v) => float(f64::from(*v)),
            Self::Double(v) => float(*v),
            Self::Char(v) => json!(v.to_string()),
            Self::Timestamp(v) => json!(v),
            Self::Uuid(v) => json!(format_uuid(v)),
            Self::Binary(v) => json!(base64::engine::general_purpose::STANDARD.encode(v)),
            Self::String(v) | Self::Symbol(v) => json!(v),
        }
    }

    /// Reads a value stored under `tag` (the inverse of [`to_json`](Self::to_json)).
    pub(crate) fn from_json(tag: &str, value: &Value) -> Result<Self, String> {
        let bad = || format!("`{value}` is not a valid `{tag}` property value");
        let int = || value.as_i64().ok_or_else(bad);
        let uint = || value.as_u64().ok_or_else(bad);
        let text = || value.as_str().ok_or_else(bad);
        let float = || -> Result<f64, String> {
            match value {
                Value::Number(n) => n.as_f64().ok_or_else(bad),
                Value::String(s) => match s.as_str() {
                    "NaN" => Ok(f64::NAN),
                    "Infinity" => Ok(f64::INFINITY),
                    "-Infinity" => Ok(f64::NEG_INFINITY),
                    _ => Err(bad()),
                },
                _ => Err(bad()),
            }
        };
        Ok(match tag {
            "null" => Self::Null,
            "bool" => Self::Bool(value.as_bool().ok_or_else(bad)?),
            "ubyte" => Self::UByte(uint()?.try_into().map_err(|_| bad())?),
            "ushort" => Self::UShort(uint()?.try_into().map_err(|_| bad())?),
            "uint" => Self::UInt(uint()?.try_into().map_err(|_| bad())?),
            "ulong" => Self::ULong(uint()?),
            "byte" => Self::Byte(int()?.try_into().map_err(|_| bad())?),
            "short" => Self::Short(int()?.try_into().map_err(|_| bad())?),
            "int" => Self::Int(int()?.try_into().map_err(|_| bad())?),
            "long" => Self::Long(int()?),
            // f64 → f32 is exact for every value that was an f32.
            "float" => Self::Float(float()? as f32),
            "double" => Self::Double(float()?),
            "char" => {
                let mut chars = text()?.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Self::Char(c),
                    _ => return Err(bad()),
                }
            }
            "timestamp" => Self::Timestamp(int()?),
            "uuid" => Self::Uuid(parse_uuid(text()?).ok_or_else(bad)?),
            "binary" => Self::Binary(
                base64::engine::general_purpose::STANDARD
                    .decode(text()?)
                    .map_err(|_| bad())?,
            ),
            "string" => Self::String(text()?.to_owned()),
            "symbol" => Self::Symbol(text()?.to_owned()),
            other => return Err(format!("unknown property type `{other}`")),
        })
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

/// Encodes application properties as the stored JSON array. Written straight into one buffer
/// (this runs once per telemetry message, on the connection's task), with serde_json escaping
/// the text: no intermediate JSON tree.
pub(crate) fn encode_properties(properties: &[(String, PropertyValue)]) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(2 + properties.len() * 48);
    out.push(b'[');
    for (i, (name, value)) in properties.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"n\":");
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, name);
        out.extend_from_slice(b",\"t\":\"");
        out.extend_from_slice(value.type_name().as_bytes());
        out.push(b'"');
        match value {
            PropertyValue::Null => {}
            PropertyValue::String(text) | PropertyValue::Symbol(text) => {
                out.extend_from_slice(b",\"v\":");
                let _ = serde_json::to_writer(&mut out, text);
            }
            other => {
                out.extend_from_slice(b",\"v\":");
                let _ = serde_json::to_writer(&mut out, &other.to_json());
            }
        }
        out.push(b'}');
    }
    out.push(b']');
    // serde_json writes UTF-8, and so does everything else here.
    String::from_utf8(out).unwrap_or_default()
}

/// Decodes the stored JSON array of application properties.
pub(crate) fn decode_properties(text: &str) -> Result<Vec<(String, PropertyValue)>, String> {
    let items: Vec<Value> =
        serde_json::from_str(text).map_err(|e| format!("stored properties: {e}"))?;
    items
        .iter()
        .map(|item| {
            let name = item["n"].as_str().ok_or("stored property without a name")?;
            let tag = item["t"].as_str().ok_or("stored property without a type")?;
            Ok((name.to_owned(), PropertyValue::from_json(tag, &item["v"])?))
        })
        .collect()
}

/// Encodes the sender's system properties (not the hub-stamped ones) as a JSON object.
pub(crate) fn encode_system(s: &SystemProperties) -> String {
    if *s == SystemProperties::default() {
        return "{}".to_owned();
    }
    let mut map = Map::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            map.insert(key.to_owned(), json!(v));
        }
    };
    put("messageId", s.message_id.clone());
    put("correlationId", s.correlation_id.clone());
    put("userId", s.user_id.clone());
    put("to", s.to.clone());
    put("contentType", s.content_type.clone());
    put("contentEncoding", s.content_encoding.clone());
    put("expiryTimeUtc", s.expiry_time_utc.map(format_timestamp));
    put("creationTimeUtc", s.creation_time_utc.map(format_timestamp));
    put("outputName", s.output_name.clone());
    put("inputName", s.input_name.clone());
    put("componentName", s.component_name.clone());
    put("interfaceId", s.interface_id.clone());
    put("messageSchema", s.message_schema.clone());
    put("ack", s.ack.map(|a| a.as_str().to_owned()));
    put("lockToken", s.lock_token.clone());
    put("diagnosticId", s.diagnostic_id.clone());
    put("diagnosticContext", s.diagnostic_context.clone());
    if let Some(count) = s.delivery_count {
        map.insert("deliveryCount".into(), json!(count));
    }
    if !s.other.is_empty() {
        map.insert("other".into(), json!(s.other));
    }
    Value::Object(map).to_string()
}

/// Decodes [`encode_system`]'s JSON.
pub(crate) fn decode_system(text: &str) -> Result<SystemProperties, String> {
    let map: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| format!("stored system properties: {e}"))?;
    let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
    let time = |key: &str| -> Result<_, String> {
        match map.get(key).and_then(Value::as_str) {
            None => Ok(None),
            Some(t) => parse_timestamp(t)
                .map(Some)
                .ok_or_else(|| format!("stored {key} `{t}` is not a timestamp")),
        }
    };
    let mut s = SystemProperties::default();
    s.message_id = text("messageId");
    s.correlation_id = text("correlationId");
    s.user_id = text("userId");
    s.to = text("to");
    s.content_type = text("contentType");
    s.content_encoding = text("contentEncoding");
    s.expiry_time_utc = time("expiryTimeUtc")?;
    s.creation_time_utc = time("creationTimeUtc")?;
    s.output_name = text("outputName");
    s.input_name = text("inputName");
    s.component_name = text("componentName");
    s.interface_id = text("interfaceId");
    s.message_schema = text("messageSchema");
    s.ack = text("ack").as_deref().and_then(AckMode::parse);
    s.lock_token = text("lockToken");
    s.diagnostic_id = text("diagnosticId");
    s.diagnostic_context = text("diagnosticContext");
    s.delivery_count = map
        .get("deliveryCount")
        .and_then(Value::as_u64)
        .and_then(|c| u32::try_from(c).ok());
    if let Some(other) = map.get("other") {
        s.other = serde_json::from_value(other.clone())
            .map_err(|e| format!("stored system properties: {e}"))?;
    }
    Ok(s)
}

/// A timestamp from milliseconds since the Unix epoch, if in range.
pub(crate) fn timestamp_from_ms(ms: i64) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// Milliseconds since the Unix epoch of `t`.
pub(crate) fn ms_of(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn format_uuid(b: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*b).hyphenated().to_string()
}

fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    (text.len() == 36)
        .then(|| uuid::Uuid::try_parse(text).ok())
        .flatten()
        .map(|u| *u.as_bytes())
}
