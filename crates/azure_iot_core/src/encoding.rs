//! Percent-encoding as IoT Hub clients use it.
//!
//! Every place that puts caller text into a URI component or an MQTT topic segment (SAS `sr`
//! and `sig`, device and module ids in topics, property-bag keys and values) uses the same
//! rule: everything except the RFC 3986 *unreserved* characters (`A-Z a-z 0-9 - . _ ~`) is
//! written as `%XX` with upper-case hex. That is exactly what the Python SDK's
//! `quote(s, safe="")` and the Node SDK's `encodeURIComponent` plus its extra escaping of
//! `! ' ( ) *` produce, so our output is byte-identical to theirs.
//!
//! Form encoding (`+` for space) is never used: a `+` in an MQTT topic is a wildcard
//! character to some brokers and is read back as a literal `+` by the hub.
//!
//! Decoding is tolerant, because the C SDK sends property values un-encoded by default: an
//! invalid escape such as `%zz` is kept literally, `+` stays `+`, and a decoded byte sequence
//! that is not UTF-8 falls back to the text as received.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Everything but the RFC 3986 unreserved characters is escaped.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `text` as one URI component (upper-case hex, unreserved characters kept).
///
/// ```
/// use azure_iot_core::encoding::encode_component;
/// assert_eq!(encode_component("dev 1/ü"), "dev%201%2F%C3%BC");
/// ```
pub fn encode_component(text: &str) -> Cow<'_, str> {
    utf8_percent_encode(text, COMPONENT).into()
}

/// Decodes `%XX` escapes once, keeping invalid escapes and `+` as they are.
///
/// If the decoded bytes are not UTF-8 the input is returned unchanged, so decoding never
/// fails and never loses information.
///
/// ```
/// use azure_iot_core::encoding::decode_component;
/// assert_eq!(decode_component("a%20b+c%zz"), "a b+c%zz");
/// ```
pub fn decode_component(text: &str) -> Cow<'_, str> {
    match percent_decode_str(text).decode_utf8() {
        Ok(decoded) => decoded,
        Err(_) => Cow::Borrowed(text),
    }
}

/// Decodes `%XX` escapes once and fails if the result is not UTF-8.
///
/// Used where a value must be exact (SAS `sig`), rather than tolerated.
pub fn decode_component_strict(text: &str) -> Option<Cow<'_, str>> {
    percent_decode_str(text).decode_utf8().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_python_quote_safe_empty() {
        // From the Python SDK's SAS vector for device id `dev*(x)!'~`.
        assert_eq!(
            encode_component("localhost/devices/dev*(x)!'~"),
            "localhost%2Fdevices%2Fdev%2A%28x%29%21%27~"
        );
        assert_eq!(encode_component("a+b=c&d"), "a%2Bb%3Dc%26d");
    }

    #[test]
    fn decode_is_tolerant() {
        assert_eq!(decode_component("%24.mid"), "$.mid");
        assert_eq!(decode_component("100%"), "100%");
        assert_eq!(decode_component("%FF%FE"), "%FF%FE");
        assert_eq!(decode_component_strict("%FF"), None);
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(s in any::<String>()) {
            let encoded = encode_component(&s);
            prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            prop_assert_eq!(decode_component(&encoded), s.as_str());
        }

        #[test]
        fn decode_never_panics(s in any::<String>()) {
            let _ = decode_component(&s);
        }
    }
}
