//! A logged telemetry message as the built-in endpoint delivers it: what IoT Hub stamps, with
//! the AMQP types the Event Hubs SDKs cast to.
//!
//! | section | entry | AMQP type |
//! |---|---|---|
//! | properties | `message-id`, `correlation-id` (string), `user-id` (binary), `content-type`, `content-encoding` (symbol), `absolute-expiry-time` | as sent |
//! | message annotations | `x-opt-sequence-number` | long |
//! | | `x-opt-offset` | string (decimal) |
//! | | `x-opt-enqueued-time`, `iothub-enqueuedtime` | timestamp |
//! | | `iothub-connection-device-id`, `iothub-connection-module-id` | string |
//! | | `iothub-connection-auth-method` | string (JSON `{"scope","type","issuer","acceptingIpFilterRule"}`); telemetry only |
//! | | `iothub-connection-auth-generation-id` | string; telemetry only |
//! | | `iothub-message-source` | string: `Telemetry`, or the hub notification's source (`twinChangeEvents` …) |
//! | | `iothub-interface-id`, `dt-subject` (component), `iothub-diagnostic-*` | string, when sent |
//! | application properties | the device's, with their original types; `iothub-creation-time-utc`, `iothub-message-schema`, `iothub-outputname` (a module's output) when sent | |
//! | body | one data section | |
//! | delivery annotations | `last_enqueued_sequence_number` (long), `last_enqueued_offset` (string), `last_enqueued_time_utc`, `runtime_info_retrieval_time_utc` (timestamps): only for a receiver that asked with the desired capability `com.microsoft:enable-receiver-runtime-metric` | |
//!
//! No `x-opt-partition-key`: IoT Hub places a device's messages in a partition by a hash of the
//! device id without giving Event Hubs a partition key, and the events captured from real hubs
//! (Microsoft's non-telemetry event schema page, IoT Edge module telemetry samples) carry none.
//! Hub notifications (twin change, lifecycle, connection state; `crate::hub::routed`) carry
//! `user-id` (the hub's name), `correlation-id`, content type and encoding like any message,
//! and no authentication annotations: no device connection sent them.

use fe2o3_amqp_types::messaging::annotations::OwnedKey;
use fe2o3_amqp_types::messaging::{
    ApplicationProperties, Body, Data, DeliveryAnnotations, MessageAnnotations, MessageId,
    Properties,
};
use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};

use azure_iot_core::datetime::format_timestamp;
use azure_iot_protocol::amqp::AmqpMessage;

use super::super::typed::to_simple;
use crate::telemetry::{MessageSource, PartitionInfo, TelemetryEvent};

/// The application property carrying a module's output name (as the AMQP device SDKs send it).
pub(crate) const OUTPUT_NAME_PROPERTY: &str = "iothub-outputname";

/// Milliseconds since the Unix epoch of `at`, saturated.
pub(crate) fn millis(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The `iothub-connection-auth-method` JSON of a sender that authenticated with `method`
/// (`sas`, `x509` ...) as a device or a module.
fn auth_method(method: Option<&str>, module: bool) -> String {
    let kind = match method {
        Some(m) if m.starts_with("x509") => "x509Certificate",
        Some("sas") | None => "sas",
        Some(other) => other,
    };
    let scope = if module { "module" } else { "device" };
    serde_json::json!({
        "scope": scope,
        "type": kind,
        "issuer": "iothub",
        "acceptingIpFilterRule": null,
    })
    .to_string()
}

/// The delivery annotations a receiver that asked for the runtime metric gets with every
/// event: its partition's newest event (`last_enqueued_sequence_number` long,
/// `last_enqueued_offset` string, `last_enqueued_time_utc` timestamp) and when that was read
/// (`runtime_info_retrieval_time_utc` timestamp), as the Event Hubs SDKs read them.
pub(crate) fn runtime_metric(info: &PartitionInfo) -> DeliveryAnnotations {
    let mut annotations = DeliveryAnnotations::default();
    let mut note = |name: &str, value: Value| {
        annotations.insert(OwnedKey::Symbol(Symbol::from(name)), value);
    };
    note(
        "last_enqueued_sequence_number",
        Value::Long(info.last_enqueued_sequence_number),
    );
    note(
        "last_enqueued_offset",
        Value::String(info.last_enqueued_offset.clone()),
    );
    if let Some(at) = info.last_enqueued_time {
        note(
            "last_enqueued_time_utc",
            Value::Timestamp(Timestamp::from_milliseconds(millis(at))),
        );
    }
    note(
        "runtime_info_retrieval_time_utc",
        Value::Timestamp(Timestamp::from_milliseconds(millis(
            time::OffsetDateTime::now_utc(),
        ))),
    );
    annotations
}

/// The AMQP message of `event`; `generation_id` is the sender's registry generation id, when
/// it is still registered.
pub(crate) fn to_message(event: &TelemetryEvent, generation_id: Option<&str>) -> AmqpMessage {
    let system = event.message.system_properties();
    let mut properties = Properties::builder();
    if let Some(id) = &system.message_id {
        properties = properties.message_id(MessageId::String(id.clone()));
    }
    if let Some(id) = &system.correlation_id {
        properties = properties.correlation_id(MessageId::String(id.clone()));
    }
    if let Some(user) = &system.user_id {
        properties = properties.user_id(Binary::from(user.as_bytes().to_vec()));
    }
    if let Some(value) = &system.content_type {
        properties = properties.content_type(Symbol::from(value.as_str()));
    }
    if let Some(value) = &system.content_encoding {
        properties = properties.content_encoding(Symbol::from(value.as_str()));
    }
    if let Some(at) = system.expiry_time_utc {
        properties = properties.absolute_expiry_time(Timestamp::from_milliseconds(millis(at)));
    }

    let mut annotations = MessageAnnotations::default();
    let mut note = |name: &str, value: Value| {
        annotations.insert(OwnedKey::Symbol(Symbol::from(name)), value);
    };
    let enqueued = system
        .enqueued_time
        .map(|t| Timestamp::from_milliseconds(millis(t)));
    note(
        "x-opt-sequence-number",
        Value::Long(event.partition_sequence_number),
    );
    note("x-opt-offset", Value::String(event.offset.clone()));
    if let Some(at) = enqueued.clone() {
        note("x-opt-enqueued-time", Value::Timestamp(at.clone()));
        note("iothub-enqueuedtime", Value::Timestamp(at));
    }
    note(
        "iothub-connection-device-id",
        Value::String(event.device_id.clone()),
    );
    if let Some(module) = &event.module_id {
        note("iothub-connection-module-id", Value::String(module.clone()));
    }
    let telemetry = event.source == MessageSource::Telemetry;
    if telemetry {
        note(
            "iothub-connection-auth-method",
            Value::String(auth_method(
                system.connection_auth_method.as_deref(),
                event.module_id.is_some(),
            )),
        );
        if let Some(generation) = generation_id {
            note(
                "iothub-connection-auth-generation-id",
                Value::String(generation.to_owned()),
            );
        }
    }
    note(
        "iothub-message-source",
        Value::String(event.source.as_str().to_owned()),
    );
    let text = |value: &Option<String>| value.clone().map(Value::String);
    for (name, value) in [
        ("iothub-interface-id", text(&system.interface_id)),
        ("dt-subject", text(&system.component_name)),
        ("iothub-diagnostic-id", text(&system.diagnostic_id)),
        (
            "iothub-diagnostic-correlation-context",
            text(&system.diagnostic_context),
        ),
    ] {
        if let Some(value) = value {
            note(name, value);
        }
    }

    let mut application = ApplicationProperties::default();
    for (name, value) in &event.properties {
        application.insert(name.clone(), to_simple(value));
    }
    if let Some(at) = system.creation_time_utc {
        application.insert(
            "iothub-creation-time-utc".to_owned(),
            SimpleValue::String(format_timestamp(at)),
        );
    }
    if let Some(schema) = &system.message_schema {
        application.insert(
            "iothub-message-schema".to_owned(),
            SimpleValue::String(schema.clone()),
        );
    }
    if let Some(output) = &system.output_name
        && !application.contains_key(OUTPUT_NAME_PROPERTY)
    {
        application.insert(
            OUTPUT_NAME_PROPERTY.to_owned(),
            SimpleValue::String(output.clone()),
        );
    }

    let mut builder = fe2o3_amqp_types::messaging::Message::builder()
        .properties(properties.build())
        .message_annotations(annotations);
    if !application.is_empty() {
        builder = builder.application_properties(application);
    }
    builder
        .body(Body::Data(
            vec![Data(Binary::from(event.message.body().to_vec()))].into(),
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_method_is_the_hubs_json() {
        let json: serde_json::Value =
            serde_json::from_str(&auth_method(Some("sas"), false)).unwrap();
        assert_eq!(json["scope"], "device");
        assert_eq!(json["type"], "sas");
        assert_eq!(json["issuer"], "iothub");
        assert!(json["acceptingIpFilterRule"].is_null());
        let json: serde_json::Value =
            serde_json::from_str(&auth_method(Some("x509"), true)).unwrap();
        assert_eq!(json["scope"], "module");
        assert_eq!(json["type"], "x509Certificate");
    }
}
