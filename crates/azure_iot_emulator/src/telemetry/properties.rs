//! The log's neutral, typed encoding of message properties ([`PropertyValue`] is
//! `azure_iot_protocol`'s, shared with the service client).
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
//! | `other` | the text of a value with no AMQP type here |
//!
//! System properties (message id, content type ...) are a JSON object under IoT Hub's names
//! (`messageId`, `contentType`, `expiryTimeUtc` as ISO 8601 ...); the hub-stamped ones
//! (connection device and module, auth method, enqueued time, sequence number) are columns.

use azure_iot_core::datetime::{format_timestamp, parse_timestamp};
use azure_iot_core::message::{AckMode, SystemProperties};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::source::{MessageSource, SOURCE_KEY};

pub use azure_iot_protocol::amqp::PropertyValue;

/// The value as text, for string-only consumers (MQTT property bags, the monitor's
/// `properties` map): numbers in decimal, timestamps in ISO 8601, uuids hyphenated, binary in
/// base64, `null` as the empty string.
pub(crate) fn text_of(value: &PropertyValue) -> String {
    match value {
        PropertyValue::Timestamp(at) => format_timestamp(*at),
        PropertyValue::Uuid(u) => u.hyphenated().to_string(),
        PropertyValue::Binary(v) => base64::engine::general_purpose::STANDARD.encode(v),
        other => other.to_string(),
    }
}

/// The value as the JSON the log stores (without its tag).
pub(crate) fn stored_json(value: &PropertyValue) -> Value {
    fn float(v: f64) -> Value {
        if v.is_nan() {
            json!("NaN")
        } else if v.is_infinite() {
            json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            json!(v)
        }
    }
    match value {
        PropertyValue::Float(v) => float(f64::from(*v)),
        PropertyValue::Double(v) => float(*v),
        PropertyValue::Timestamp(at) => json!(ms_of(*at)),
        PropertyValue::Char(_)
        | PropertyValue::Uuid(_)
        | PropertyValue::Binary(_)
        | PropertyValue::Other(_) => json!(text_of(value)),
        other => other.to_json(),
    }
}

/// Reads a value stored under `tag` (the inverse of [`stored_json`]).
pub(crate) fn value_from_stored(tag: &str, value: &Value) -> Result<PropertyValue, String> {
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
        "null" => PropertyValue::Null,
        "bool" => PropertyValue::Bool(value.as_bool().ok_or_else(bad)?),
        "ubyte" => PropertyValue::Ubyte(uint()?.try_into().map_err(|_| bad())?),
        "ushort" => PropertyValue::Ushort(uint()?.try_into().map_err(|_| bad())?),
        "uint" => PropertyValue::Uint(uint()?.try_into().map_err(|_| bad())?),
        "ulong" => PropertyValue::Ulong(uint()?),
        "byte" => PropertyValue::Byte(int()?.try_into().map_err(|_| bad())?),
        "short" => PropertyValue::Short(int()?.try_into().map_err(|_| bad())?),
        "int" => PropertyValue::Int(int()?.try_into().map_err(|_| bad())?),
        "long" => PropertyValue::Long(int()?),
        // f64 → f32 is exact for every value that was an f32.
        "float" => PropertyValue::Float(float()? as f32),
        "double" => PropertyValue::Double(float()?),
        "char" => {
            let mut chars = text()?.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => PropertyValue::Char(c),
                _ => return Err(bad()),
            }
        }
        "timestamp" => PropertyValue::Timestamp(timestamp_from_ms(int()?).ok_or_else(bad)?),
        "uuid" => PropertyValue::Uuid(parse_uuid(text()?).ok_or_else(bad)?),
        "binary" => PropertyValue::Binary(
            base64::engine::general_purpose::STANDARD
                .decode(text()?)
                .map_err(|_| bad())?,
        ),
        "string" => PropertyValue::String(text()?.to_owned()),
        "symbol" => PropertyValue::Symbol(text()?.to_owned()),
        "other" => PropertyValue::Other(text()?.to_owned()),
        other => return Err(format!("unknown property type `{other}`")),
    })
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
                let _ = serde_json::to_writer(&mut out, &stored_json(other));
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
            Ok((name.to_owned(), value_from_stored(tag, &item["v"])?))
        })
        .collect()
}

/// Encodes the sender's system properties (not the hub-stamped ones) as a JSON object.
pub(crate) fn encode_system(s: &SystemProperties) -> String {
    if *s == SystemProperties::default() {
        return "{}".to_owned();
    }
    Value::Object(system_map(s)).to_string()
}

/// Encodes a logged event's system properties with its source (telemetry's are exactly
/// [`encode_system`]'s).
pub(crate) fn encode_logged_system(s: &SystemProperties, source: MessageSource) -> String {
    if source == MessageSource::Telemetry {
        return encode_system(s);
    }
    let mut map = system_map(s);
    map.insert(SOURCE_KEY.into(), json!(source.as_str()));
    Value::Object(map).to_string()
}

/// The JSON object of [`encode_system`].
fn system_map(s: &SystemProperties) -> Map<String, Value> {
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
    map
}

/// Decodes [`encode_logged_system`]'s JSON: the system properties and the event's source.
pub(crate) fn decode_logged_system(
    text: &str,
) -> Result<(SystemProperties, MessageSource), String> {
    let map: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| format!("stored system properties: {e}"))?;
    let source = match map.get(SOURCE_KEY).and_then(Value::as_str) {
        None => MessageSource::Telemetry,
        Some(name) => MessageSource::parse(name)
            .ok_or_else(|| format!("stored message source `{name}` is not known"))?,
    };
    Ok((system_from_map(&map)?, source))
}

/// Decodes [`encode_system`]'s JSON.
pub(crate) fn decode_system(text: &str) -> Result<SystemProperties, String> {
    let map: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| format!("stored system properties: {e}"))?;
    system_from_map(&map)
}

/// The system properties of a stored JSON object.
fn system_from_map(map: &Map<String, Value>) -> Result<SystemProperties, String> {
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

fn parse_uuid(text: &str) -> Option<uuid::Uuid> {
    (text.len() == 36)
        .then(|| uuid::Uuid::try_parse(text).ok())
        .flatten()
}
