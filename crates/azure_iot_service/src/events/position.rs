//! Where a partition receiver starts: [`EventPosition`] and the selector filter it becomes on
//! the receiver's source (`apache.org:selector-filter:string`).
//!
//! The filter value is a described string. The descriptor differs between the official SDKs
//! (.NET `0x0000_0137_0000_000A`, go-amqp and rhea `0x0000_468C_0000_0004`); Event Hubs and the
//! emulator key the filter by its symbol, and this client sends the latter. The expressions
//! are the Event Hubs ones:
//!
//! | position | expression |
//! |---|---|
//! | earliest | `amqp.annotation.x-opt-offset > '-1'` |
//! | latest | `amqp.annotation.x-opt-offset > '@latest'` |
//! | offset *o* | `amqp.annotation.x-opt-offset > 'o'` (`>=` inclusive) |
//! | sequence number *n* | `amqp.annotation.x-opt-sequence-number > n` (`>=` inclusive) |
//! | enqueued time *t* | `amqp.annotation.x-opt-enqueued-time > {unix ms}` |

use fe2o3_amqp_types::messaging::FilterSet;
use fe2o3_amqp_types::primitives::{OrderedMap, Symbol, Value};
use serde_amqp::described::Described;
use serde_amqp::descriptor::Descriptor;
use time::OffsetDateTime;

/// The filter-set key of the selector filter.
pub(crate) const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";

/// The selector filter's descriptor code this client sends (go-amqp's and rhea's).
pub(crate) const SELECTOR_FILTER_CODE: u64 = 0x0000_468C_0000_0004;

/// Where to start reading a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventPosition {
    /// The oldest event the partition retains.
    Earliest,
    /// Only events enqueued after the receiver attaches.
    Latest,
    /// After (or, inclusive, at) the event with this offset (`x-opt-offset`, a decimal string).
    Offset {
        /// The offset, as the events carry it.
        offset: String,
        /// Include the event at `offset` itself.
        inclusive: bool,
    },
    /// After (or, inclusive, at) the event with this sequence number.
    SequenceNumber {
        /// The sequence number.
        sequence_number: i64,
        /// Include the event with this number itself.
        inclusive: bool,
    },
    /// Events enqueued after this time (millisecond precision).
    EnqueuedTime(OffsetDateTime),
}

impl EventPosition {
    /// After the event with `sequence_number` (what a reconnect resumes from).
    pub fn after_sequence_number(sequence_number: i64) -> Self {
        Self::SequenceNumber {
            sequence_number,
            inclusive: false,
        }
    }

    /// The selector expression.
    pub fn expression(&self) -> String {
        let op = |inclusive: bool| if inclusive { ">=" } else { ">" };
        match self {
            Self::Earliest => "amqp.annotation.x-opt-offset > '-1'".to_owned(),
            Self::Latest => "amqp.annotation.x-opt-offset > '@latest'".to_owned(),
            Self::Offset { offset, inclusive } => {
                format!(
                    "amqp.annotation.x-opt-offset {} '{}'",
                    op(*inclusive),
                    offset.replace('\'', "")
                )
            }
            Self::SequenceNumber {
                sequence_number,
                inclusive,
            } => format!(
                "amqp.annotation.x-opt-sequence-number {} {sequence_number}",
                op(*inclusive)
            ),
            Self::EnqueuedTime(at) => format!(
                "amqp.annotation.x-opt-enqueued-time > {}",
                at.unix_timestamp_nanos() / 1_000_000
            ),
        }
    }

    /// The source filter set carrying [`expression`](Self::expression).
    pub(crate) fn filter_set(&self) -> FilterSet {
        let mut set = OrderedMap::new();
        set.insert(
            Symbol::from(SELECTOR_FILTER),
            Value::Described(Box::new(Described {
                descriptor: Descriptor::Code(SELECTOR_FILTER_CODE),
                value: Value::String(self.expression()),
            })),
        );
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn expressions_are_the_event_hubs_ones() {
        let cases = [
            (
                EventPosition::Earliest,
                "amqp.annotation.x-opt-offset > '-1'",
            ),
            (
                EventPosition::Latest,
                "amqp.annotation.x-opt-offset > '@latest'",
            ),
            (
                EventPosition::Offset {
                    offset: "4096".into(),
                    inclusive: true,
                },
                "amqp.annotation.x-opt-offset >= '4096'",
            ),
            (
                EventPosition::after_sequence_number(2995),
                "amqp.annotation.x-opt-sequence-number > 2995",
            ),
            (
                EventPosition::SequenceNumber {
                    sequence_number: 7,
                    inclusive: true,
                },
                "amqp.annotation.x-opt-sequence-number >= 7",
            ),
            (
                EventPosition::EnqueuedTime(
                    OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap(),
                ),
                "amqp.annotation.x-opt-enqueued-time > 1700000000123",
            ),
        ];
        for (position, expected) in cases {
            assert_eq!(position.expression(), expected);
        }
    }

    #[test]
    fn the_filter_is_a_described_string_under_the_selector_symbol() {
        let set = EventPosition::Earliest.filter_set();
        let value = set.get(&Symbol::from(SELECTOR_FILTER));
        let Some(Value::Described(described)) = value else {
            panic!("no described filter: {set:?}");
        };
        assert_eq!(described.descriptor, Descriptor::Code(SELECTOR_FILTER_CODE));
        assert_eq!(
            described.value,
            Value::String("amqp.annotation.x-opt-offset > '-1'".into())
        );
        assert_eq!(set.len(), 1);
    }

    proptest! {
        /// An offset never closes the quoted literal early.
        #[test]
        fn offsets_stay_one_quoted_literal(offset in ".{0,40}", inclusive: bool) {
            let expression = EventPosition::Offset { offset, inclusive }.expression();
            prop_assert_eq!(expression.matches('\'').count(), 2);
            prop_assert!(expression.ends_with('\''));
        }
    }
}
