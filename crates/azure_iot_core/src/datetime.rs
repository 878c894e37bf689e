//! Timestamps as IoT Hub writes and reads them.
//!
//! IoT Hub and the .NET SDK use the .NET round-trip format (`"o"`): UTC with seven fractional
//! digits and a `Z`, e.g. `2033-05-18T03:33:20.0000000Z`. The C# SDK *parses* timestamps with
//! that exact format, so it is the one we write. We read every form the official SDKs send:
//! any number of fractional digits, `Z` or a numeric offset (Python writes `+00:00`, Node
//! `.000Z`), and no offset at all (.NET `Unspecified` kind, taken as UTC).

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Formats `t` in UTC as `yyyy-MM-ddTHH:mm:ss.fffffffZ` (seven fractional digits).
///
/// ```
/// use azure_iot_core::datetime::{format_timestamp, parse_timestamp};
/// let t = parse_timestamp("2033-05-18T03:33:20+00:00").unwrap();
/// assert_eq!(format_timestamp(t), "2033-05-18T03:33:20.0000000Z");
/// ```
pub fn format_timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

/// Parses an ISO 8601 / RFC 3339 timestamp in any of the forms the official SDKs write.
///
/// Returns `None` for anything else; callers turn that into their own typed error.
///
/// The result is truncated to IoT Hub's precision, 100 ns (a .NET tick), so that
/// [`format_timestamp`] of it parses back to the same instant.
pub fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    let t = parse_any(text.trim())?;
    t.replace_nanosecond(t.nanosecond() / 100 * 100).ok()
}

fn parse_any(text: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t);
    }
    // Lower-case `t`/`z` and a missing offset: normalise and try again.
    let upper = text.to_ascii_uppercase();
    if let Ok(t) = OffsetDateTime::parse(&upper, &Rfc3339) {
        return Some(t);
    }
    let with_zone = format!("{upper}Z");
    OffsetDateTime::parse(&with_zone, &Rfc3339)
        .ok()
        .or_else(|| {
            // RFC 3339 requires seconds; accept `HH:MM` without them as well.
            OffsetDateTime::parse(&format!("{upper}:00Z"), &Rfc3339).ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_sdk_form_parses_to_the_same_instant() {
        let forms = [
            "2033-05-18T03:33:20+00:00",         // Python
            "2033-05-18T03:33:20.000Z",          // Node
            "2033-05-18T03:33:20.0000000Z",      // .NET "o", UTC
            "2033-05-18T03:33:20.0000000",       // .NET "o", unspecified kind
            "2033-05-18T05:33:20.0000000+02:00", // .NET "o", local kind
            "2033-05-18t03:33:20z",
        ];
        for form in forms {
            let t = parse_timestamp(form).unwrap_or_else(|| panic!("{form}"));
            assert_eq!(t.unix_timestamp(), 2_000_000_000, "{form}");
            assert_eq!(format_timestamp(t), "2033-05-18T03:33:20.0000000Z");
        }
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp(""), None);
    }

    #[test]
    fn keeps_sub_second_precision_to_100ns() {
        let t = parse_timestamp("2024-01-02T03:04:05.123456789Z").unwrap();
        assert_eq!(format_timestamp(t), "2024-01-02T03:04:05.1234567Z");
        assert_eq!(t.nanosecond(), 123_456_700);
        assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t));
    }

    proptest! {
        #[test]
        fn format_parse_round_trip(secs in 0i64..253_402_300_799, hundred_ns in 0u32..10_000_000) {
            let t = OffsetDateTime::from_unix_timestamp(secs).unwrap()
                + time::Duration::nanoseconds(i64::from(hundred_ns) * 100);
            prop_assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t));
        }

        #[test]
        fn parse_never_panics(text in "\\PC*") {
            let _ = parse_timestamp(&text);
        }
    }
}
