//! The start position of a consumer link: the selector filter in its source.
//!
//! The filter is keyed by the symbol `apache.org:selector-filter:string`; its value is a
//! described string whose descriptor differs by SDK (Python uses the symbol itself, .NET the
//! code `0x0000_0137_0000_000A`, go-amqp and rhea `0x0000_468C_0000_0004`), so any descriptor
//! (or none) is accepted. The expression is `amqp.annotation.{field} {op} {value}`:
//!
//! | field | value | position |
//! |---|---|---|
//! | `x-opt-offset` | a byte offset, `-1` (start of stream) or `@latest` (end of stream) | by offset |
//! | `x-opt-sequence-number` | a partition sequence number | by sequence number |
//! | `x-opt-enqueued-time` | Unix milliseconds | enqueued after that time |
//!
//! `op` is `>` or `>=` (inclusive); the value may be quoted (`'…'`, as Python and JS send it).
//! A link without a filter starts at the start of the stream.

use fe2o3_amqp_types::messaging::FilterSet;
use fe2o3_amqp_types::primitives::Value;

use crate::telemetry::EventPosition;

/// The filter-set key of the selector filter.
pub(crate) const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";

/// The longest expression looked at.
const MAX_EXPRESSION_LEN: usize = 256;

/// Why a selector filter could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FilterError {
    /// The filter's value is not a (described) string.
    #[error("the selector filter is not a string")]
    NotText,
    /// The expression is longer than the endpoint reads.
    #[error("the selector filter is {0} characters long; at most {MAX_EXPRESSION_LEN} are read")]
    TooLong(usize),
    /// Not `amqp.annotation.{field} {op} {value}`.
    #[error("the selector filter `{0}` is not `amqp.annotation.<field> > <value>` or `>=`")]
    Syntax(String),
    /// A field the endpoint does not filter on.
    #[error(
        "the selector filter field `{0}` is not x-opt-offset, x-opt-sequence-number or x-opt-enqueued-time"
    )]
    Field(String),
    /// A value that is not a number (or `@latest`, for an offset).
    #[error("the selector filter value `{value}` is not valid for {field}")]
    Value {
        /// The field.
        field: &'static str,
        /// The value as written.
        value: String,
    },
}

/// The start position a consumer link's filter set asks for (the start of the stream
/// without a selector filter).
pub(crate) fn start_position(filters: Option<&FilterSet>) -> Result<EventPosition, FilterError> {
    let selector = filters.and_then(|set| {
        set.iter()
            .find(|(key, _)| key.as_str() == SELECTOR_FILTER)
            .map(|(_, value)| value)
    });
    let Some(value) = selector else {
        return Ok(EventPosition::Earliest);
    };
    let text = match value {
        Value::Described(described) => match &described.value {
            Value::String(s) => s.as_str(),
            _ => return Err(FilterError::NotText),
        },
        Value::String(s) => s.as_str(),
        _ => return Err(FilterError::NotText),
    };
    parse_expression(text)
}

/// Reads one selector expression.
pub(crate) fn parse_expression(text: &str) -> Result<EventPosition, FilterError> {
    if text.len() > MAX_EXPRESSION_LEN {
        return Err(FilterError::TooLong(text.len()));
    }
    let syntax = || FilterError::Syntax(text.to_owned());
    let text = text.trim();
    let (field, rest) = text
        .split_once(|c: char| c.is_whitespace() || c == '>')
        .ok_or_else(syntax)?;
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('>').unwrap_or(rest);
    let (inclusive, value) = match rest.strip_prefix('=') {
        Some(value) => (true, value),
        None => (false, rest),
    };
    // `>` must have been there: the field is followed by the operator (spaces allowed).
    if !text[field.len()..].trim_start().starts_with('>') {
        return Err(syntax());
    }
    let value = value.trim();
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value);
    let field = field
        .strip_prefix("amqp.annotation.")
        .ok_or_else(syntax)?
        .to_ascii_lowercase();
    let number = |name: &'static str| {
        value.parse::<i64>().map_err(|_| FilterError::Value {
            field: name,
            value: value.to_owned(),
        })
    };
    match field.as_str() {
        "x-opt-offset" => match value {
            "@latest" => Ok(EventPosition::Latest),
            "-1" => Ok(EventPosition::Earliest),
            _ => Ok(EventPosition::Offset {
                offset: number("x-opt-offset")?,
                inclusive,
            }),
        },
        "x-opt-sequence-number" => Ok(EventPosition::SequenceNumber {
            number: number("x-opt-sequence-number")?,
            inclusive,
        }),
        "x-opt-enqueued-time" => {
            let ms = number("x-opt-enqueued-time")?;
            // Inclusive means from that millisecond on: after the one before.
            let after = if inclusive { ms.saturating_sub(1) } else { ms };
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(after) * 1_000_000)
                .map(EventPosition::EnqueuedAfter)
                .map_err(|_| FilterError::Value {
                    field: "x-opt-enqueued-time",
                    value: value.to_owned(),
                })
        }
        _ => Err(FilterError::Field(field)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::primitives::Symbol;
    use proptest::prelude::*;
    use serde_amqp::described::Described;
    use serde_amqp::descriptor::Descriptor;

    fn set(value: Value) -> FilterSet {
        let mut set = FilterSet::default();
        set.insert(Symbol::from(SELECTOR_FILTER), value);
        set
    }

    fn described(descriptor: Descriptor, text: &str) -> Value {
        Value::Described(Box::new(Described {
            descriptor,
            value: Value::String(text.into()),
        }))
    }

    #[test]
    fn every_sdk_form_reads() {
        let cases = [
            // Python: quoted values.
            (
                "amqp.annotation.x-opt-offset > '-1'",
                EventPosition::Earliest,
            ),
            (
                "amqp.annotation.x-opt-sequence-number >= '5'",
                EventPosition::SequenceNumber {
                    number: 5,
                    inclusive: true,
                },
            ),
            // JS: end of stream.
            (
                "amqp.annotation.x-opt-offset > '@latest'",
                EventPosition::Latest,
            ),
            // .NET and the IoT Hub docs: bare values.
            (
                "amqp.annotation.x-opt-sequence-number > 2995",
                EventPosition::SequenceNumber {
                    number: 2995,
                    inclusive: false,
                },
            ),
            (
                "amqp.annotation.x-opt-offset>=128",
                EventPosition::Offset {
                    offset: 128,
                    inclusive: true,
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_expression(text), Ok(want), "{text}");
        }
        let at = parse_expression("amqp.annotation.x-opt-enqueued-time > '1700000000123'").unwrap();
        assert_eq!(
            at,
            EventPosition::EnqueuedAfter(
                time::OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_000_000).unwrap()
            )
        );
    }

    #[test]
    fn any_descriptor_is_accepted_and_no_filter_is_the_start() {
        let text = "amqp.annotation.x-opt-sequence-number > '7'";
        let want = EventPosition::SequenceNumber {
            number: 7,
            inclusive: false,
        };
        for descriptor in [
            Descriptor::Name(Symbol::from(SELECTOR_FILTER)),
            Descriptor::Code(0x0000_0137_0000_000A),
            Descriptor::Code(0x0000_468C_0000_0004),
        ] {
            assert_eq!(
                start_position(Some(&set(described(descriptor, text)))),
                Ok(want)
            );
        }
        assert_eq!(
            start_position(Some(&set(Value::String(text.into())))),
            Ok(want)
        );
        assert_eq!(start_position(None), Ok(EventPosition::Earliest));
        assert_eq!(
            start_position(Some(&FilterSet::default())),
            Ok(EventPosition::Earliest)
        );
    }

    #[test]
    fn bad_filters_are_typed_errors() {
        assert_eq!(
            start_position(Some(&set(Value::Int(3)))),
            Err(FilterError::NotText)
        );
        assert!(matches!(
            parse_expression("amqp.annotation.x-opt-offset < 5"),
            Err(FilterError::Syntax(_))
        ));
        assert!(matches!(
            parse_expression("x-opt-offset > 5"),
            Err(FilterError::Syntax(_))
        ));
        assert!(matches!(
            parse_expression("amqp.annotation.x-opt-partition-key > 'a'"),
            Err(FilterError::Field(_))
        ));
        assert!(matches!(
            parse_expression("amqp.annotation.x-opt-sequence-number > 'five'"),
            Err(FilterError::Value { .. })
        ));
        assert!(matches!(
            parse_expression(&"a".repeat(300)),
            Err(FilterError::TooLong(300))
        ));
    }

    proptest! {
        #[test]
        fn any_expression_reads_or_fails_without_panicking(text in ".{0,80}") {
            let _ = parse_expression(&text);
        }

        #[test]
        fn numbers_round_trip(n in any::<i64>(), inclusive in any::<bool>()) {
            let op = if inclusive { ">=" } else { ">" };
            let parsed = parse_expression(&format!("amqp.annotation.x-opt-sequence-number {op} '{n}'"));
            prop_assert_eq!(parsed, Ok(EventPosition::SequenceNumber { number: n, inclusive }));
        }
    }
}
