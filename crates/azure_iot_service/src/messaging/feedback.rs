//! Delivery feedback: the records the hub reports for cloud-to-device messages that asked for
//! them, taken in batches (one AMQP message, a JSON array, each) by an [`InboxReceiver`].

use azure_iot_protocol::amqp::Address;
use serde::Deserialize;

use super::inbox::{InboxBatch, InboxItem, InboxReceiver};
use crate::models::null_as_empty;

/// The outcome of one cloud-to-device message, as the hub reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct FeedbackRecord {
    /// The message id of the cloud-to-device message (empty if it had none).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub original_message_id: String,
    /// The target device.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub device_id: String,
    /// The device's generation id.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub device_generation_id: String,
    /// What happened.
    #[serde(default, deserialize_with = "status_or_unknown")]
    pub status_code: FeedbackStatus,
    /// The hub's description.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub description: String,
    /// When the outcome happened (ISO 8601).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub enqueued_time_utc: String,
}

/// A status that may be `null` or missing: [`FeedbackStatus::Unknown`].
fn status_or_unknown<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<FeedbackStatus, D::Error> {
    Ok(Option::<FeedbackStatus>::deserialize(d)?.unwrap_or(FeedbackStatus::Unknown))
}

/// What happened to a cloud-to-device message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub enum FeedbackStatus {
    /// The device completed it.
    Success,
    /// It expired before the device completed it.
    Expired,
    /// It was delivered too many times without completion.
    DeliveryCountExceeded,
    /// The device rejected it.
    Rejected,
    /// The queue was purged.
    Purged,
    /// A status this client does not know (or none).
    #[serde(other)]
    #[default]
    Unknown,
}

impl InboxItem for FeedbackRecord {
    const ADDRESS: Address = Address::Feedback;
    const WHAT: &'static str = "feedback";
    const CREDIT: u32 = 4;

    fn decode(body: &[u8]) -> std::result::Result<Vec<Self>, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// A batch of feedback records, one AMQP message. Settle it with
/// [`FeedbackReceiver::complete`] or [`FeedbackReceiver::abandon`].
pub type FeedbackBatch = InboxBatch<FeedbackRecord>;

/// Receives delivery feedback, from [`Messaging::feedback`](crate::Messaging::feedback):
/// batches of up to 64 records, a few batches locked to the receiver at a time.
pub type FeedbackReceiver = InboxReceiver<FeedbackRecord>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_records_parse_with_unknown_statuses() {
        let body = br#"[{"originalMessageId":"m1","deviceId":"d1","deviceGenerationId":"g","statusCode":"Success","description":"Success","enqueuedTimeUtc":"2026-01-01T00:00:00Z"},
                        {"originalMessageId":"m2","deviceId":"d1","statusCode":"SomethingNew"},
                        {"originalMessageId":null,"deviceId":"d1","statusCode":null,"description":null,"deviceGenerationId":null,"enqueuedTimeUtc":null}]"#;
        let records: Vec<FeedbackRecord> = serde_json::from_slice(body).unwrap();
        assert_eq!(records[0].status_code, FeedbackStatus::Success);
        assert_eq!(records[1].status_code, FeedbackStatus::Unknown);
        assert_eq!(records[2].status_code, FeedbackStatus::Unknown);
        assert_eq!(records[2].original_message_id, "");
    }

    proptest::proptest! {
        #[test]
        fn any_feedback_body_is_read_without_panicking(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = serde_json::from_slice::<Vec<FeedbackRecord>>(&body);
        }
    }
}
