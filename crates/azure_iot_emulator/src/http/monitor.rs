//! `GET /$emulator/telemetry`: read the telemetry log, for `azure-iot hub monitor-events` and
//! scripts. Emulator-specific (IoT Hub itself exposes telemetry through its Event Hubs-compatible
//! endpoint); authenticated like the service API (ServiceConnect).
//!
//! Query parameters: `after` (log-wide sequence number, default 0 = from the start), `limit`
//! (1–1000, default 100), `deviceId` (only this device), `partition` (only this partition),
//! `wait` (seconds, 0–60, default 0): when nothing newer exists yet, wait up to that long for it
//! (long polling).
//!
//! Answer: a JSON array, oldest first, of
//! `{"sequenceNumber", "deviceId", "moduleId", "enqueuedTime", "body" | "bodyBase64",
//!   "properties": {...}, "systemProperties": {...}, "partition", "partitionSequenceNumber",
//!   "offset", "typedProperties": [...]}`
//! where `body` is the payload as text when it is UTF-8, else `bodyBase64`; `properties` maps
//! each application property to its value as text, `typedProperties` lists them with their
//! types as the log stores them (`{"name", "type", "value"}`). Reads use the log's read-only
//! connections, never its writer. The header
//! `azure-iot-latest-sequence` carries the newest sequence number in the log, so a client can
//! start "from now" with `after` set to it.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::Response;
use base64::Engine as _;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiError, AppState, json_ok};
use crate::hub::policy::Rights;
use crate::telemetry::TelemetryEvent;

const MAX_LIMIT: usize = 1000;
const MAX_WAIT_SECS: u64 = 60;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MonitorQuery {
    after: Option<u64>,
    limit: Option<usize>,
    device_id: Option<String>,
    partition: Option<u32>,
    wait: Option<u64>,
}

pub(crate) async fn telemetry(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<MonitorQuery>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    if let Some(p) = query.partition
        && p >= app.mqtt.device.telemetry.partition_count()
    {
        return Err(ApiError::invalid(format!(
            "partition must be below {}",
            app.mqtt.device.telemetry.partition_count()
        )));
    }
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let deadline = tokio::time::Instant::now() + wait;
    let mut newest = app.mqtt.device.telemetry.watch();
    loop {
        // Mark the current value seen before reading, so a commit in between wakes us.
        newest.borrow_and_update();
        let events = app
            .mqtt
            .device
            .telemetry
            .read(after, limit, query.device_id.clone(), query.partition)
            .await?;
        let waited_enough = tokio::time::Instant::now() >= deadline;
        if events.is_empty()
            && !waited_enough
            && let Ok(Ok(())) = tokio::time::timeout_at(deadline, newest.changed()).await
        {
            continue;
        }
        let mut response = json_ok(Value::Array(events.iter().map(event_json).collect()));
        let latest = *newest.borrow();
        response
            .headers_mut()
            .insert("azure-iot-latest-sequence", http::HeaderValue::from(latest));
        return Ok(response);
    }
}

/// One event as JSON.
pub(crate) fn event_json(event: &TelemetryEvent) -> Value {
    let message = &event.message;
    let s = message.system_properties();
    let mut system = Map::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            system.insert(key.to_owned(), json!(v));
        }
    };
    let time = |t: Option<time::OffsetDateTime>| t.map(azure_iot_core::datetime::format_timestamp);
    put("messageId", s.message_id.clone());
    put("correlationId", s.correlation_id.clone());
    put("userId", s.user_id.clone());
    put("contentType", s.content_type.clone());
    put("contentEncoding", s.content_encoding.clone());
    put("expiryTimeUtc", time(s.expiry_time_utc));
    put("creationTimeUtc", time(s.creation_time_utc));
    put("outputName", s.output_name.clone());
    put("componentName", s.component_name.clone());
    put("interfaceId", s.interface_id.clone());
    put("messageSchema", s.message_schema.clone());
    put("connectionDeviceId", s.connection_device_id.clone());
    put("connectionModuleId", s.connection_module_id.clone());
    put("connectionAuthMethod", s.connection_auth_method.clone());
    put("enqueuedTime", Some(event.enqueued_time.clone()));
    let properties: Map<String, Value> = message
        .properties()
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let typed: Vec<Value> = event
        .properties
        .iter()
        .map(|(name, value)| {
            json!({"name": name, "type": value.type_name(), "value": crate::telemetry::properties::stored_json(value)})
        })
        .collect();
    let mut out = json!({
        "sequenceNumber": event.sequence_number,
        "deviceId": event.device_id,
        "moduleId": event.module_id,
        "enqueuedTime": event.enqueued_time,
        "properties": properties,
        "systemProperties": system,
        "partition": event.partition,
        "partitionSequenceNumber": event.partition_sequence_number,
        "offset": event.offset,
        "typedProperties": typed,
    });
    if let Some(map) = out.as_object_mut() {
        match std::str::from_utf8(message.body()) {
            Ok(text) => map.insert("body".into(), json!(text)),
            Err(_) => map.insert(
                "bodyBase64".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(message.body())),
            ),
        };
    }
    out
}
