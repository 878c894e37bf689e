//! IoT Hub error codes, and the error every hub operation returns.
//!
//! Each error carries the hub's numeric code, its name and the HTTP status the REST API answers
//! with; the HTTP front-end turns it into the body the official SDKs parse
//! (`{"Message":"ErrorCode:{Name};{text}","ExceptionMessage":"Tracking ID:...","ErrorCode":n}`).
//! Messages say what is wrong in terms the caller can act on; they never contain keys or
//! tokens.

use std::fmt;

/// The IoT Hub error codes the emulator answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    ArgumentInvalid,
    IotHubUnauthorizedAccess,
    EndpointNotFound,
    DeviceNotFound,
    ModuleNotFound,
    DeviceNotOnline,
    DeviceAlreadyExists,
    ModuleAlreadyExists,
    PreconditionFailed,
    DeviceMessageLockLost,
    MessageTooLarge,
    DeviceMaximumQueueDepthExceeded,
    Throttled,
    NotImplemented,
    ServerError,
    GatewayTimeout,
}

impl ErrorCode {
    /// `(http status, numeric code, name)`.
    fn parts(self) -> (u16, u32, &'static str) {
        match self {
            Self::ArgumentInvalid => (400, 400_004, "ArgumentInvalid"),
            Self::IotHubUnauthorizedAccess => (401, 401_002, "IotHubUnauthorizedAccess"),
            Self::EndpointNotFound => (404, 404_000, "NotFound"),
            Self::DeviceNotFound => (404, 404_001, "DeviceNotFound"),
            Self::ModuleNotFound => (404, 404_010, "ModuleNotFound"),
            Self::DeviceNotOnline => (404, 404_103, "DeviceNotOnline"),
            Self::DeviceAlreadyExists => (409, 409_001, "DeviceAlreadyExists"),
            Self::ModuleAlreadyExists => (409, 409_301, "ModuleAlreadyExists"),
            Self::PreconditionFailed => (412, 412_001, "PreconditionFailed"),
            Self::DeviceMessageLockLost => (412, 412_002, "DeviceMessageLockLost"),
            Self::MessageTooLarge => (413, 413_001, "MessageTooLarge"),
            Self::DeviceMaximumQueueDepthExceeded => {
                (403, 403_004, "DeviceMaximumQueueDepthExceeded")
            }
            Self::Throttled => (429, 429_001, "ThrottlingException"),
            Self::NotImplemented => (501, 501_001, "NotImplemented"),
            Self::ServerError => (500, 500_001, "ServerError"),
            Self::GatewayTimeout => (504, 504_101, "GatewayTimeout"),
        }
    }

    pub(crate) fn status(self) -> u16 {
        self.parts().0
    }

    pub(crate) fn number(self) -> u32 {
        self.parts().1
    }

    pub(crate) fn name(self) -> &'static str {
        self.parts().2
    }
}

/// A failed hub operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HubError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl HubError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ArgumentInvalid, message)
    }

    pub(crate) fn device_not_found(device_id: &str) -> Self {
        Self::new(
            ErrorCode::DeviceNotFound,
            format!("Device {device_id} not found"),
        )
    }

    pub(crate) fn module_not_found(device_id: &str, module_id: &str) -> Self {
        Self::new(
            ErrorCode::ModuleNotFound,
            format!("Module {module_id} on device {device_id} not found"),
        )
    }

    pub(crate) fn precondition_failed() -> Self {
        Self::new(
            ErrorCode::PreconditionFailed,
            "The If-Match ETag does not match the current ETag",
        )
    }

    pub(crate) fn storage(e: impl fmt::Display) -> Self {
        Self::new(ErrorCode::ServerError, format!("storage failure: {e}"))
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl From<rusqlite::Error> for HubError {
    fn from(e: rusqlite::Error) -> Self {
        Self::storage(e)
    }
}
