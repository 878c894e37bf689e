//! Where a logged event comes from: a device's telemetry, or one of the hub's own
//! notifications that IoT Hub routes to the built-in endpoint when a route asks for them
//! (`crate::hub::routed`).
//!
//! The source is kept in the stored system-properties object under [`SOURCE_KEY`] (absent for
//! telemetry, so telemetry rows are unchanged); a sender cannot set it, since the object only
//! ever holds the names `encode_system` writes.

/// The key of the stored system-properties object that names a non-telemetry source.
pub(crate) const SOURCE_KEY: &str = "messageSource";

/// The `iothub-message-source` of a logged event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageSource {
    /// Device-to-cloud telemetry (`Telemetry`).
    #[default]
    Telemetry,
    /// A twin was updated or replaced (`twinChangeEvents`).
    TwinChangeEvents,
    /// A device or module identity was created or deleted (`deviceLifecycleEvents`).
    DeviceLifecycleEvents,
    /// A device or module connected or disconnected (`deviceConnectionStateEvents`).
    DeviceConnectionStateEvents,
}

impl MessageSource {
    /// The value IoT Hub stamps as `iothub-message-source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Telemetry => "Telemetry",
            Self::TwinChangeEvents => "twinChangeEvents",
            Self::DeviceLifecycleEvents => "deviceLifecycleEvents",
            Self::DeviceConnectionStateEvents => "deviceConnectionStateEvents",
        }
    }

    /// The source named `text` (as [`as_str`](Self::as_str) writes it).
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Telemetry,
            Self::TwinChangeEvents,
            Self::DeviceLifecycleEvents,
            Self::DeviceConnectionStateEvents,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for source in [
            MessageSource::Telemetry,
            MessageSource::TwinChangeEvents,
            MessageSource::DeviceLifecycleEvents,
            MessageSource::DeviceConnectionStateEvents,
        ] {
            assert_eq!(MessageSource::parse(source.as_str()), Some(source));
        }
        assert_eq!(MessageSource::parse("telemetry"), None);
    }
}
