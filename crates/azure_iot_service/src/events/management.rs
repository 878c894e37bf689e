//! `$management` requests: the event hub's properties (partition ids) and a partition's.
//!
//! A request is a message to `$management` with application properties `operation = READ`,
//! `name = {event hub}`, `type = com.microsoft:eventhub` (or `com.microsoft:partition` with
//! `partition = {id}`), `security_token = {SAS}` (as the Python and newer .NET SDKs send it),
//! a `message-id` and a `reply-to` naming our receiver link's target. The answer carries
//! `status-code` / `status-description` application properties and a map body.

use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::{Receiver, Sender};
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Properties,
};
use fe2o3_amqp_types::primitives::{OrderedMap, SimpleValue, Value};
use time::OffsetDateTime;

use crate::error::{Error, ErrorKind, Result};
use crate::messaging::{answer_to, transport};
use azure_iot_protocol::amqp::AmqpMessage;

/// The management node's address.
pub(crate) const MANAGEMENT: &str = "$management";

/// What `$management` says about an event hub.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventHubProperties {
    /// The event hub's name.
    pub name: String,
    /// When it was created, if the endpoint said.
    pub created_at: Option<OffsetDateTime>,
    /// Its partition ids (`"0"`, `"1"`, …).
    pub partition_ids: Vec<String>,
}

/// What `$management` says about one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionProperties {
    /// The event hub's name.
    pub event_hub_name: String,
    /// The partition id.
    pub id: String,
    /// The oldest retained event's sequence number.
    pub begin_sequence_number: i64,
    /// The newest event's sequence number.
    pub last_enqueued_sequence_number: i64,
    /// The newest event's offset.
    pub last_enqueued_offset: String,
    /// When the newest event was enqueued.
    pub last_enqueued_time: Option<OffsetDateTime>,
    /// Whether the partition holds no events.
    pub is_empty: bool,
}

/// The request/answer links to `$management` on one session.
pub(crate) struct Management {
    requests: Sender,
    answers: Receiver,
    reply_to: String,
    next_id: u64,
}

/// A field of the answer map (string or symbol keys).
type AnswerMap = OrderedMap<Value, Value>;

impl Management {
    pub(crate) async fn attach(session: &mut SessionHandle<()>) -> Result<Self> {
        let reply_to = format!("eh-mgmt-{}", uuid::Uuid::new_v4());
        let requests = Sender::builder()
            .name(format!("{reply_to}-requests"))
            .source(reply_to.clone())
            .target(MANAGEMENT)
            .attach(session)
            .await
            .map_err(|e| transport("the endpoint refused the $management sender link", e))?;
        let answers = Receiver::builder()
            .name(format!("{reply_to}-answers"))
            .source(MANAGEMENT)
            .target(reply_to.clone())
            .attach(session)
            .await
            .map_err(|e| transport("the endpoint refused the $management receiver link", e))?;
        Ok(Self {
            requests,
            answers,
            reply_to,
            next_id: 0,
        })
    }

    /// The event hub's properties.
    pub(crate) async fn event_hub(
        &mut self,
        name: &str,
        token: &str,
    ) -> Result<EventHubProperties> {
        let answer = self
            .request(name, "com.microsoft:eventhub", None, token)
            .await?;
        let partition_ids = match field(&answer, "partition_ids") {
            Some(Value::Array(ids)) => ids.0.iter().map(text).collect(),
            Some(Value::List(ids)) => ids.iter().map(text).collect(),
            _ => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    "the $management answer has no partition_ids",
                ));
            }
        };
        Ok(EventHubProperties {
            name: field(&answer, "name").map_or_else(|| name.to_owned(), text),
            created_at: field(&answer, "created_at").and_then(time_of),
            partition_ids,
        })
    }

    /// A partition's properties.
    pub(crate) async fn partition(
        &mut self,
        name: &str,
        partition: &str,
        token: &str,
    ) -> Result<PartitionProperties> {
        let answer = self
            .request(name, "com.microsoft:partition", Some(partition), token)
            .await?;
        let number = |key: &str| field(&answer, key).and_then(integer).unwrap_or(-1);
        Ok(PartitionProperties {
            event_hub_name: field(&answer, "name").map_or_else(|| name.to_owned(), text),
            id: field(&answer, "partition").map_or_else(|| partition.to_owned(), text),
            begin_sequence_number: number("begin_sequence_number"),
            last_enqueued_sequence_number: number("last_enqueued_sequence_number"),
            last_enqueued_offset: field(&answer, "last_enqueued_offset")
                .map(text)
                .unwrap_or_default(),
            last_enqueued_time: field(&answer, "last_enqueued_time_utc").and_then(time_of),
            is_empty: matches!(
                field(&answer, "is_partition_empty"),
                Some(Value::Bool(true))
            ),
        })
    }

    async fn request(
        &mut self,
        name: &str,
        kind: &str,
        partition: Option<&str>,
        token: &str,
    ) -> Result<AnswerMap> {
        self.next_id += 1;
        let id = MessageId::String(format!("mgmt-{}", self.next_id));
        let mut properties = ApplicationProperties::builder()
            .insert("operation", "READ")
            .insert("name", name)
            .insert("type", kind)
            .insert("security_token", token);
        if let Some(partition) = partition {
            properties = properties.insert("partition", partition);
        }
        let request: AmqpMessage = Message::builder()
            .properties(
                Properties::builder()
                    .message_id(id.clone())
                    .reply_to(self.reply_to.clone())
                    .build(),
            )
            .application_properties(properties.build())
            .body(Body::Value(AmqpValue(Value::Null)))
            .build();
        self.requests
            .send(request)
            .await
            .map_err(|e| transport("sending the $management request failed", e))?;
        let message =
            answer_to(&mut self.answers, &id, "the $management answer link broke").await?;
        answer_of(&message, name, partition)
    }
}

/// The answer's map, or the error its status says.
fn answer_of(message: &AmqpMessage, name: &str, partition: Option<&str>) -> Result<AnswerMap> {
    let app = |key: &str| {
        message
            .application_properties
            .as_ref()
            .and_then(|p| p.get(key))
    };
    let status = app("status-code").and_then(|v| match v {
        SimpleValue::Int(n) => Some(i64::from(*n)),
        SimpleValue::Long(n) => Some(*n),
        SimpleValue::Uint(n) => Some(i64::from(*n)),
        _ => None,
    });
    let description = app("status-description")
        .map(azure_iot_protocol::amqp::message::simple_text)
        .unwrap_or_default();
    let what = match partition {
        Some(p) => format!("partition {p} of event hub {name}"),
        None => format!("event hub {name}"),
    };
    match status {
        Some(200) => {}
        Some(401) => {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                format!("$management refused to describe {what}: {description}"),
            ));
        }
        Some(404) => {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("{what} does not exist: {description}"),
            ));
        }
        Some(400) => {
            return Err(Error::new(
                ErrorKind::BadRequest,
                format!("$management refused the request for {what}: {description}"),
            ));
        }
        other => {
            return Err(Error::new(
                ErrorKind::ServiceError,
                format!(
                    "$management answered {} for {what}: {description}",
                    other.map_or_else(|| "no status".to_owned(), |s| s.to_string())
                ),
            ));
        }
    }
    match &message.body {
        Body::Value(AmqpValue(Value::Map(map))) => Ok(map.clone()),
        _ => Err(Error::new(
            ErrorKind::Protocol,
            format!("the $management answer for {what} is not a map"),
        )),
    }
}

fn field<'a>(map: &'a AnswerMap, key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| match k {
            Value::String(s) => s == key,
            Value::Symbol(s) => s.as_str() == key,
            _ => false,
        })
        .map(|(_, v)| v)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Symbol(s) => s.as_str().to_owned(),
        other => match SimpleValue::try_from(other.clone()) {
            Ok(simple) => azure_iot_protocol::amqp::message::simple_text(&simple),
            Err(_) => format!("{other:?}"),
        },
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Long(n) => Some(*n),
        Value::Int(n) => Some(i64::from(*n)),
        Value::Uint(n) => Some(i64::from(*n)),
        Value::Ulong(n) => i64::try_from(*n).ok(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn time_of(value: &Value) -> Option<OffsetDateTime> {
    match value {
        Value::Timestamp(t) => {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.milliseconds()) * 1_000_000).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::primitives::{Array, Timestamp};

    fn answer(status: i32, body: Value) -> AmqpMessage {
        Message::builder()
            .application_properties(
                ApplicationProperties::builder()
                    .insert("status-code", status)
                    .insert("status-description", "why")
                    .build(),
            )
            .body(Body::Value(AmqpValue(body)))
            .build()
    }

    #[test]
    fn an_ok_answer_gives_its_map_and_errors_their_kind() {
        let mut map = OrderedMap::new();
        map.insert(Value::String("name".into()), Value::String("hub".into()));
        map.insert(
            Value::String("partition_ids".into()),
            Value::Array(Array(vec![
                Value::String("0".into()),
                Value::String("1".into()),
            ])),
        );
        map.insert(
            Value::Symbol("created_at".into()),
            Value::Timestamp(Timestamp::from_milliseconds(1000)),
        );
        let ok = answer_of(&answer(200, Value::Map(map)), "hub", None).unwrap();
        assert_eq!(field(&ok, "name").map(text).as_deref(), Some("hub"));
        assert_eq!(
            field(&ok, "created_at")
                .and_then(time_of)
                .map(|t| t.unix_timestamp()),
            Some(1)
        );
        for (status, kind) in [
            (404, ErrorKind::NotFound),
            (401, ErrorKind::Unauthorized),
            (400, ErrorKind::BadRequest),
            (500, ErrorKind::ServiceError),
        ] {
            let err = answer_of(&answer(status, Value::Null), "hub", Some("9")).unwrap_err();
            assert_eq!(err.kind(), kind, "{status}");
            assert!(err.to_string().contains("partition 9"), "{err}");
        }
        let err = answer_of(&answer(200, Value::Null), "hub", None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol);
    }
}
