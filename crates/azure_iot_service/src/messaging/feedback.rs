//! Delivery feedback: the records the hub reports for cloud-to-device messages that asked for
//! them, and the receiver that takes them in batches (one AMQP message, a JSON array, each)
//! and settles each batch (accepted = completed, released = delivered again).

use std::collections::VecDeque;
use std::sync::Arc;

use fe2o3_amqp::Receiver;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp_types::messaging::{AmqpValue, Body};
use fe2o3_amqp_types::primitives::Value;
use futures_util::stream::BoxStream;
use serde::Deserialize;

use super::connection::{Conn, transport};
use crate::error::{Error, ErrorKind, Result};
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

/// A batch of feedback records, one AMQP message. Settle it with
/// [`FeedbackReceiver::complete`] or [`FeedbackReceiver::abandon`].
#[derive(Debug)]
pub struct FeedbackBatch {
    /// The records.
    pub records: Vec<FeedbackRecord>,
    delivery: DeliveryInfo,
}

/// Receives delivery feedback, from [`Messaging::feedback`](crate::Messaging::feedback).
pub struct FeedbackReceiver {
    pub(super) receiver: Receiver,
    /// Keeps the connection open while the receiver lives.
    pub(super) _conn: Arc<Conn>,
}

impl std::fmt::Debug for FeedbackReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedbackReceiver").finish_non_exhaustive()
    }
}

impl FeedbackReceiver {
    /// The next batch; waits until the hub has one. The batch stays locked to this receiver
    /// until it is completed or abandoned (or the link closes, which releases it).
    pub async fn next_batch(&mut self) -> Result<FeedbackBatch> {
        let delivery = self
            .receiver
            .recv::<Body<Value>>()
            .await
            .map_err(|e| transport("the feedback link broke", e))?;
        let info = DeliveryInfo::from(&delivery);
        let body: Vec<u8> = match &delivery.message().body {
            Body::Data(sections) => sections.iter().flat_map(|d| d.0.iter().copied()).collect(),
            Body::Value(AmqpValue(Value::String(text))) => text.clone().into_bytes(),
            Body::Value(AmqpValue(Value::Binary(bytes))) => bytes.to_vec(),
            _ => Vec::new(),
        };
        match serde_json::from_slice::<Vec<FeedbackRecord>>(&body) {
            Ok(records) => Ok(FeedbackBatch {
                records,
                delivery: info,
            }),
            Err(e) => {
                // Unreadable: reject it so it is not redelivered forever.
                let _ = self.receiver.reject(info, None).await;
                Err(Error::with_source(
                    ErrorKind::Protocol,
                    "a feedback message is not a JSON array of feedback records",
                    e,
                ))
            }
        }
    }

    /// Completes a batch: the hub forgets it.
    pub async fn complete(&self, batch: FeedbackBatch) -> Result<()> {
        self.receiver
            .accept(batch.delivery)
            .await
            .map_err(|e| transport("completing the feedback batch failed", e))
    }

    /// Gives a batch back: the hub delivers it again.
    pub async fn abandon(&self, batch: FeedbackBatch) -> Result<()> {
        self.receiver
            .release(batch.delivery)
            .await
            .map_err(|e| transport("abandoning the feedback batch failed", e))
    }

    /// Every record, batch after batch. A batch is completed when the caller asks for the
    /// record after its last one: a caller that stops (or fails) before that leaves the batch
    /// to be delivered again, records it already had included. Feedback is at least once; to
    /// settle batches exactly when you choose, use [`next_batch`](Self::next_batch).
    pub fn into_stream(self) -> BoxStream<'static, Result<FeedbackRecord>> {
        Box::pin(futures_util::stream::try_unfold(
            (
                self,
                VecDeque::<FeedbackRecord>::new(),
                None::<DeliveryInfo>,
            ),
            |(mut this, mut buffered, mut handed)| async move {
                loop {
                    if let Some(record) = buffered.pop_front() {
                        return Ok(Some((record, (this, buffered, handed))));
                    }
                    if let Some(done) = handed.take() {
                        this.receiver
                            .accept(done)
                            .await
                            .map_err(|e| transport("completing the feedback batch failed", e))?;
                    }
                    let batch = this.next_batch().await?;
                    if batch.records.is_empty() {
                        this.complete(batch).await?;
                        continue;
                    }
                    handed = Some(batch.delivery);
                    buffered.extend(batch.records);
                }
            },
        ))
    }

    /// Detaches the link; a batch not completed is released.
    pub async fn close(self) -> Result<()> {
        self.receiver
            .close()
            .await
            .map_err(|e| transport("closing the feedback link", e))
    }
}

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
