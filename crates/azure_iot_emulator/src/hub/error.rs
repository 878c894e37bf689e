//! IoT Hub error codes, and the error every hub operation returns.
//!
//! Each error carries the hub's numeric code, its name and the HTTP status the REST API answers
//! with; the HTTP front-end turns it into the body the official SDKs parse
//! (`{"Message":"ErrorCode:{Name};{text}","ExceptionMessage":"Tracking ID:...","ErrorCode":n}`).
//! Messages say what is wrong in terms the caller can act on; they never contain keys or
//! tokens.
//!
//! The set is deliberately small: one variant per distinct answer a client can act on, with
//! the numeric codes of the hub's published table ("IoT Hub API common error codes", the .NET
//! `IotHubServiceErrorCode` enum). Clients mostly branch on the HTTP status (the Node service
//! SDK picks its error class from the status alone unless `Message` starts with
//! `ErrorCode:{Name};`), so the status must be right even where the numeric code is a best
//! guess (`ModuleNotFound` 404010, `GatewayTimeout` 504101). Device front-ends reuse the same
//! codes: an MQTT twin error answers with the status in the topic and `errorCode` in the body
//! (the Node device SDK only treats a twin answer as an error when the body has a non-zero
//! `errorCode`).

use std::fmt;

/// The IoT Hub error codes the emulator answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    /// 400 / 400004: a malformed body, a bad id, a value out of range. Not retried by any SDK.
    ArgumentInvalid,
    /// 401 / 401002: no token, a bad signature, an expired `se`, a resource that does not
    /// cover the hub, or a policy without the right the operation needs.
    IotHubUnauthorizedAccess,
    /// 404 / 404000: a path with no IoT Hub endpoint behind it, or a missing named resource
    /// that is not an identity (a CA certificate).
    EndpointNotFound,
    /// 404 / 404001: the device id is not in the registry.
    DeviceNotFound,
    /// 404 / 404010: the device exists but has no such module.
    ModuleNotFound,
    /// 404 / 404103: a direct method found no subscribed device within its connect timeout,
    /// or the device left with the call unanswered.
    DeviceNotOnline,
    /// 409 / 409001: a create (`PUT` without `If-Match`, bulk `create`) of an existing device.
    DeviceAlreadyExists,
    /// 409 / 409301: the same for a module.
    ModuleAlreadyExists,
    /// 409 (`JobAlreadyExists`): a job with this id exists already (the hub's number for it is
    /// not documented; see ADR 18).
    JobAlreadyExists,
    /// 404 / 404002: no job with this id (jobs v2).
    JobNotFound,
    /// 403 / 403003: the hub already has its maximum of active (scheduled or running) jobs.
    JobQuotaExceeded,
    /// 404: no configuration with that id.
    ConfigurationNotFound,
    /// 409: a configuration with that id exists (a create without `If-Match`).
    ConfigurationAlreadyExists,
    /// 413: the hub holds its maximum number of configurations.
    ConfigurationCountLimitExceeded,
    /// 412 / 412001: `If-Match` names an ETag that is no longer current, or a lock token no
    /// longer holds anything.
    PreconditionFailed,
    /// 412 / 412002: settling a C2D message whose lock has lapsed, that was settled already,
    /// or that the presented lock never held.
    DeviceMessageLockLost,
    /// 408 / 408000 (`RequestTimeout`): a request body that did not arrive within the body
    /// timeout (emulator-specific: the hub's front end resets such a connection). The
    /// connection is closed after the answer.
    RequestTimeout,
    /// 413 / 413001: a request body or message over the hub's limit.
    MessageTooLarge,
    /// 403 / 403004: the device's C2D queue already holds the maximum (50) messages.
    DeviceMaximumQueueDepthExceeded,
    /// 403 / 403006: the device already has the maximum (10) file uploads in progress.
    DeviceMaximumActiveFileUploadLimitExceeded,
    /// 429 / 429001 (`ThrottlingException`): an injected twin-throttling fault (MQTT twin
    /// `res/429`). CS and Java back off up to 10 s; Node switches to its 10–60 s throttled
    /// back-off.
    Throttled,
    /// 501 / 501001: a real IoT Hub feature the emulator does not have (jobs, configurations,
    /// DPS); answered instead of pretending to succeed.
    NotImplemented,
    /// 500 / 500001: a storage failure or a stopped state thread; retried by CS and Node.
    ServerError,
    /// 504 / 504101: the device took the method call but did not answer within
    /// `responseTimeoutInSeconds`.
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
            Self::JobAlreadyExists => (409, 409_000, "JobAlreadyExists"),
            Self::JobNotFound => (404, 404_002, "JobNotFound"),
            Self::JobQuotaExceeded => (403, 403_003, "JobQuotaExceeded"),
            Self::ConfigurationNotFound => (404, 404_301, "ConfigurationNotFound"),
            Self::ConfigurationAlreadyExists => (409, 409_401, "ConfigurationAlreadyExists"),
            Self::ConfigurationCountLimitExceeded => {
                (413, 413_101, "ConfigurationCountLimitExceeded")
            }
            Self::PreconditionFailed => (412, 412_001, "PreconditionFailed"),
            Self::DeviceMessageLockLost => (412, 412_002, "DeviceMessageLockLost"),
            Self::RequestTimeout => (408, 408_000, "RequestTimeout"),
            Self::MessageTooLarge => (413, 413_001, "MessageTooLarge"),
            Self::DeviceMaximumQueueDepthExceeded => {
                (403, 403_004, "DeviceMaximumQueueDepthExceeded")
            }
            Self::DeviceMaximumActiveFileUploadLimitExceeded => {
                (403, 403_006, "DeviceMaximumActiveFileUploadLimitExceeded")
            }
            Self::Throttled => (429, 429_001, "ThrottlingException"),
            Self::NotImplemented => (501, 501_001, "NotImplemented"),
            Self::ServerError => (500, 500_001, "ServerError"),
            Self::GatewayTimeout => (504, 504_101, "GatewayTimeout"),
        }
    }

    /// The HTTP status the REST API answers with.
    pub(crate) fn status(self) -> u16 {
        self.parts().0
    }

    /// The six-digit code: the status times 1000 plus a sub-code (the body's `ErrorCode`).
    pub(crate) fn number(self) -> u32 {
        self.parts().1
    }

    /// The name in `ErrorCode:{Name};` and the `iothub-errorcode` header.
    pub(crate) fn name(self) -> &'static str {
        self.parts().2
    }
}

/// A failed hub operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HubError {
    /// What kind of failure: decides the status, the numeric code and the name.
    pub(crate) code: ErrorCode,
    /// The text after `ErrorCode:{Name};`, for people: which input, which limit, which id.
    pub(crate) message: String,
}

impl HubError {
    /// An error with `code` and a human-readable `message`.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// 400 `ArgumentInvalid`: the request itself is wrong and retrying it cannot help.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ArgumentInvalid, message)
    }

    /// 404 `DeviceNotFound`, worded as the hub words it (`Device {id} not found`).
    pub(crate) fn device_not_found(device_id: &str) -> Self {
        Self::new(
            ErrorCode::DeviceNotFound,
            format!("Device {device_id} not found"),
        )
    }

    /// 404 `ModuleNotFound` for a module of an existing device.
    pub(crate) fn module_not_found(device_id: &str, module_id: &str) -> Self {
        Self::new(
            ErrorCode::ModuleNotFound,
            format!("Module {module_id} on device {device_id} not found"),
        )
    }

    /// 412 `PreconditionFailed`: the `If-Match` ETag is stale. The caller should read the
    /// entity again and retry with its current ETag (or `*`).
    pub(crate) fn precondition_failed() -> Self {
        Self::new(
            ErrorCode::PreconditionFailed,
            "The If-Match ETag does not match the current ETag",
        )
    }

    /// 500 for a failed SQLite write or unreadable stored data. Because writes go to the
    /// store before memory (ADR 4), the operation that hit it changed nothing.
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

impl From<HubError> for crate::error::EmulatorError {
    /// A hub refusal met by an internal task (the jobs scheduler), not by a client.
    fn from(e: HubError) -> Self {
        Self::Refused(e.to_string())
    }
}
