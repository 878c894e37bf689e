//! `$management`: Event Hubs' READ requests for the entity and its partitions.
//!
//! A request (on a link whose target is `$management`) carries application properties
//! `operation` = `READ`, `type` = `com.microsoft:eventhub` or `com.microsoft:partition`,
//! `name` = the entity and, for a partition, `partition`; newer SDKs add `security_token`.
//! The answer goes to the connection's `$management` receiver link with the request's
//! `message-id` as its `correlation-id` (type kept), `status-code` (int) and
//! `status-description`, and an `amqp-value` map body:
//!
//! * entity: `name`, `type`, `created_at` (timestamp), `partition_count` (int), `partition_ids` (string array);
//! * partition: `name`, `type`, `partition`, `begin_sequence_number`,
//!   `last_enqueued_sequence_number` (long), `last_enqueued_offset` (string),
//!   `last_enqueued_time_utc` (timestamp; the Unix epoch when nothing was enqueued),
//!   `is_partition_empty` (bool), `runtime_info_retrieval_time_utc` (timestamp).
//!
//! Errors: 401 without a grant or valid `security_token`, 404 for another entity or an
//! unknown partition, 400 for another operation or type.

use std::sync::Arc;
use std::time::SystemTime;

use fe2o3_amqp::link::Receiver;
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Properties,
};
use fe2o3_amqp_types::primitives::{Array, OrderedMap, SimpleValue, Timestamp, Value};

use super::super::{AmqpContext, ConnectionState, reply_or_close, truncated};
use super::EventHubs;
use super::event::millis;
use azure_iot_protocol::amqp::AmqpMessage;

/// The entity request's `type`.
pub(crate) const EVENTHUB_TYPE: &str = "com.microsoft:eventhub";
/// The partition request's `type`.
pub(crate) const PARTITION_TYPE: &str = "com.microsoft:partition";

/// Serves management requests sent on `receiver` until it ends.
pub(in crate::amqp) async fn serve_requests(
    mut receiver: Receiver,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    loop {
        let delivery = match receiver.recv::<Body<Value>>().await {
            Ok(delivery) => delivery,
            Err(_) => break,
        };
        let _ = receiver.accept(&delivery).await;
        let request = delivery.into_message();
        let (status, description, body) = answer(&request, &state, &context).await;
        let properties = request.properties.as_ref();
        let reply = reply(
            properties.and_then(|p| p.message_id.clone()),
            properties.and_then(|p| p.reply_to.clone()),
            status,
            description,
            body,
        );
        receiver = match reply_or_close(receiver, &state.management, reply).await {
            Some(receiver) => receiver,
            None => return,
        };
    }
    let _ = receiver.close().await;
}

/// An application property as text.
fn text(message: &AmqpMessage, name: &str) -> Option<String> {
    match message.application_properties.as_ref()?.get(name)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The status, description and body that answer `request`.
async fn answer(
    request: &AmqpMessage,
    state: &ConnectionState,
    context: &AmqpContext,
) -> (i32, String, Value) {
    let eh = &context.eventhubs;
    let authorized = state.authorized(&eh.grant_key())
        || text(request, "security_token").is_some_and(|token| {
            let audience = format!("sb://{}/{}", eh.hostname, eh.entity);
            matches!(
                eh.check_audience(&context.policies, &audience, &token),
                Some(Ok(_))
            )
        });
    if !authorized {
        return failure(
            401,
            "put a token for the event hub on $cbs first (a policy with ServiceConnect)",
        );
    }
    let operation = text(request, "operation").unwrap_or_default();
    if operation != "READ" {
        return failure(
            400,
            format!(
                "the management operation `{}` is not supported; only READ is",
                truncated(&operation)
            ),
        );
    }
    let name = text(request, "name").unwrap_or_default();
    if !eh.is_entity(&name) {
        return failure(
            404,
            format!(
                "The messaging entity '{}' could not be found (this endpoint's entity is '{}').",
                truncated(&name),
                eh.entity
            ),
        );
    }
    match text(request, "type").as_deref() {
        Some(EVENTHUB_TYPE) => (200, "OK".to_owned(), entity_info(eh)),
        Some(PARTITION_TYPE) => {
            let asked = text(request, "partition").unwrap_or_default();
            let count = eh.telemetry.partition_count();
            let Some(partition) = asked.parse::<u32>().ok().filter(|p| *p < count) else {
                return failure(
                    404,
                    format!(
                        "The messaging entity '{}/Partitions/{}' could not be found (partitions 0 to {}).",
                        eh.entity,
                        truncated(&asked),
                        count.saturating_sub(1)
                    ),
                );
            };
            match partition_info(eh, partition).await {
                Ok(body) => (200, "OK".to_owned(), body),
                Err(why) => failure(500, why),
            }
        }
        other => failure(
            400,
            format!(
                "the management type `{}` is not {EVENTHUB_TYPE} or {PARTITION_TYPE}",
                truncated(other.unwrap_or_default())
            ),
        ),
    }
}

fn failure(status: i32, description: impl Into<String>) -> (i32, String, Value) {
    (status, description.into(), Value::Null)
}

fn timestamp(at: SystemTime) -> Value {
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Value::Timestamp(Timestamp::from_milliseconds(ms))
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut map = OrderedMap::new();
    for (key, value) in entries {
        map.insert(Value::String(key.to_owned()), value);
    }
    Value::Map(map)
}

fn entity_info(eh: &EventHubs) -> Value {
    let count = eh.telemetry.partition_count();
    let ids: Vec<Value> = (0..count).map(|p| Value::String(p.to_string())).collect();
    map(vec![
        ("name", Value::String(eh.entity.clone())),
        ("type", Value::String(EVENTHUB_TYPE.to_owned())),
        ("created_at", timestamp(eh.created_at)),
        (
            "partition_count",
            Value::Int(i32::try_from(count).unwrap_or(i32::MAX)),
        ),
        ("partition_ids", Value::Array(Array::from(ids))),
    ])
}

async fn partition_info(eh: &EventHubs, partition: u32) -> Result<Value, String> {
    let info = eh
        .telemetry
        .partition_info(partition)
        .await
        .map_err(|e| e.to_string())?;
    let last_time = info.last_enqueued_time.map(millis).unwrap_or(0);
    Ok(map(vec![
        ("name", Value::String(eh.entity.clone())),
        ("type", Value::String(PARTITION_TYPE.to_owned())),
        ("partition", Value::String(partition.to_string())),
        (
            "begin_sequence_number",
            Value::Long(info.begin_sequence_number),
        ),
        (
            "last_enqueued_sequence_number",
            Value::Long(info.last_enqueued_sequence_number),
        ),
        (
            "last_enqueued_offset",
            Value::String(info.last_enqueued_offset),
        ),
        (
            "last_enqueued_time_utc",
            Value::Timestamp(Timestamp::from_milliseconds(last_time)),
        ),
        ("is_partition_empty", Value::Bool(info.is_empty)),
        (
            "runtime_info_retrieval_time_utc",
            timestamp(SystemTime::now()),
        ),
    ]))
}

/// The answer message.
fn reply(
    correlation: Option<MessageId>,
    to: Option<String>,
    status: i32,
    description: String,
    body: Value,
) -> AmqpMessage {
    let mut application = ApplicationProperties::default();
    application.insert("status-code".to_owned(), SimpleValue::Int(status));
    application.insert(
        "status-description".to_owned(),
        SimpleValue::String(description),
    );
    let mut properties = Properties::builder();
    if let Some(id) = correlation {
        properties = properties.correlation_id(id);
    }
    if let Some(to) = to {
        properties = properties.to(to);
    }
    Message::builder()
        .properties(properties.build())
        .application_properties(application)
        .body(Body::Value(AmqpValue(body)))
        .build()
}
