//! Batched telemetry: several messages in one AMQP transfer.
//!
//! IoT Hub reads a transfer whose `message-format` is [`BATCH_FORMAT`] (`0x80013700`, the
//! C# and C SDKs' batched-message format code) as a batch: its body is one `data` section per
//! message, each holding a complete encoded AMQP message (header, properties, application
//! properties, annotations and body sections). The outer message's own properties say
//! nothing about the messages inside.
//!
//! Decoding is total: a section that is not an encoded message is a typed [`BatchError`]
//! naming the section, never a panic.

use fe2o3_amqp_types::messaging::message::__private::Serializable;
use fe2o3_amqp_types::messaging::message::DecodeIntoMessage;
use fe2o3_amqp_types::messaging::{Body, Data, Message};
use fe2o3_amqp_types::primitives::{Binary, Value};

use super::AmqpMessage;

/// The `message-format` of a batched transfer.
pub const BATCH_FORMAT: u32 = 0x8001_3700;

/// The most messages one batch may carry (bounded anyway by the transfer's size; this keeps
/// a batch of empty messages from costing a per-message overhead without end).
pub const MAX_BATCH_MESSAGES: usize = 1000;

/// Why a batched transfer cannot be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The outer body is not `data` sections.
    #[error("a batched message's body must be data sections, one encoded message each")]
    NotData,
    /// A section does not hold an encoded AMQP message.
    #[error("section {index} of the batch is not an encoded AMQP message: {reason}")]
    Section {
        /// The section's position, from 0.
        index: usize,
        /// What the decoder said.
        reason: String,
    },
    /// More than [`MAX_BATCH_MESSAGES`] messages.
    #[error("a batch may carry at most {MAX_BATCH_MESSAGES} messages, not {0}")]
    TooMany(usize),
    /// A message could not be encoded.
    #[error("a message of the batch could not be encoded: {0}")]
    Encode(String),
}

/// The messages of a batched transfer's message, in order.
pub fn decode_batch(batch: &AmqpMessage) -> Result<Vec<AmqpMessage>, BatchError> {
    let sections: &[Data] = match &batch.body {
        Body::Data(batch) => batch.as_slice(),
        Body::Empty => &[],
        _ => return Err(BatchError::NotData),
    };
    if sections.len() > MAX_BATCH_MESSAGES {
        return Err(BatchError::TooMany(sections.len()));
    }
    sections
        .iter()
        .enumerate()
        .map(|(index, section)| {
            let reader = serde_amqp::read::SliceReader::new(section.0.as_slice());
            Body::<Value>::decode_message_from_reader(reader).map_err(|e| BatchError::Section {
                index,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// One message carrying `messages`, to send with `message-format` [`BATCH_FORMAT`].
pub fn encode_batch(messages: &[AmqpMessage]) -> Result<AmqpMessage, BatchError> {
    if messages.len() > MAX_BATCH_MESSAGES {
        return Err(BatchError::TooMany(messages.len()));
    }
    let sections = messages
        .iter()
        .map(|message| {
            serde_amqp::to_vec(&Serializable(message))
                .map(|bytes| Data(Binary::from(bytes)))
                .map_err(|e| BatchError::Encode(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Message::builder().body(Body::Data(sections.into())).build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::{from_amqp, to_amqp};
    use azure_iot_core::message::Message as IotMessage;
    use proptest::prelude::*;

    fn message(n: u32) -> IotMessage {
        IotMessage::builder(format!("body {n}").into_bytes())
            .message_id(format!("id-{n}"))
            .property("n", n.to_string())
            .build()
            .unwrap()
    }

    #[test]
    fn a_batch_round_trips_its_messages_in_order() {
        let messages: Vec<_> = (0..3).map(|n| to_amqp(&message(n))).collect();
        let batch = encode_batch(&messages).unwrap();
        let decoded = decode_batch(&batch).unwrap();
        assert_eq!(decoded.len(), 3);
        for (n, amqp) in decoded.iter().enumerate() {
            assert_eq!(from_amqp(amqp).unwrap(), message(n as u32));
        }
    }

    #[test]
    fn sections_that_are_not_messages_are_named() {
        let batch: AmqpMessage = Message::builder()
            .body(Body::Data(
                vec![
                    Data(Binary::from(
                        serde_amqp::to_vec(&Serializable(&to_amqp(&message(0)))).unwrap(),
                    )),
                    Data(Binary::from(vec![0xff, 0x00])),
                ]
                .into(),
            ))
            .build();
        assert!(matches!(
            decode_batch(&batch),
            Err(BatchError::Section { index: 1, .. })
        ));
        let value: AmqpMessage = Message::builder()
            .body(Body::Value(fe2o3_amqp_types::messaging::AmqpValue(
                Value::String("x".into()),
            )))
            .build();
        assert_eq!(decode_batch(&value), Err(BatchError::NotData));
    }

    proptest! {
        /// Arbitrary section bytes never panic the decoder.
        #[test]
        fn decoding_arbitrary_sections_is_total(sections in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4)) {
            let batch: AmqpMessage = Message::builder()
                .body(Body::Data(sections.into_iter().map(|s| Data(Binary::from(s))).collect::<Vec<_>>().into()))
                .build();
            let _ = decode_batch(&batch);
        }
    }
}
