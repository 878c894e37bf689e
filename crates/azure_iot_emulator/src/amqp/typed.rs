//! Typed application properties between the telemetry log ([`PropertyValue`]) and AMQP
//! ([`SimpleValue`]): what a device sent over AMQP is stored with its type and served to
//! Event Hubs consumers with the same type.

use fe2o3_amqp_types::primitives::{SimpleValue, Value};

use crate::telemetry::PropertyValue;

/// The AMQP value of a stored property.
pub(crate) fn to_simple(value: &PropertyValue) -> SimpleValue {
    value.to_amqp()
}

/// The stored form of an AMQP application property; `None` for the types the log does not
/// keep (decimals, described values, timestamps out of range), which are then stored as text.
pub(crate) fn from_simple(value: &SimpleValue) -> Option<PropertyValue> {
    match PropertyValue::from_amqp(&Value::from(value.clone())) {
        PropertyValue::Other(_) => None,
        typed => Some(typed),
    }
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp_types::primitives::Timestamp;

    use super::*;

    // Every type's round trip is `azure_iot_protocol::amqp::value`'s test; here only what the
    // log adds: values with no stored type are left to the text fallback.
    #[test]
    fn typed_values_are_kept_and_the_rest_left_to_text() {
        let typed = SimpleValue::Int(-3);
        assert_eq!(from_simple(&typed), Some(PropertyValue::Int(-3)));
        assert_eq!(to_simple(&PropertyValue::Int(-3)), typed);
        let beyond = SimpleValue::Timestamp(Timestamp::from_milliseconds(i64::MAX));
        assert_eq!(from_simple(&beyond), None);
    }
}
