//! The crate's error type: an opaque [`Error`] with a [`kind`](Error::kind), the hub's error
//! code and tracking id where the hub gave them, and [`is_transient`](Error::is_transient).
//!
//! Messages name what went wrong and never include a key, token or connection string.

use std::fmt;

use azure_iot_core::retry::{Classify, ErrorClass};

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An argument (id, connection string, key, patch, message) is invalid; nothing was sent.
    InvalidArgument,
    /// The service refused the credentials (401) or a CBS token.
    Unauthorized,
    /// The hub refused the operation for lack of rights or quota (403, or 413
    /// `ConfigurationCountLimitExceeded`).
    Forbidden,
    /// The device, module, enrollment or other entity does not exist (404).
    NotFound,
    /// A direct method's target is not connected (404 `DeviceNotOnline`).
    DeviceNotOnline,
    /// The entity already exists (409).
    AlreadyExists,
    /// The ETag condition did not match (412).
    PreconditionFailed,
    /// The hub is throttling this client (429).
    Throttled,
    /// The request or the device did not answer in time (408, 504, or the client's own timeout).
    Timeout,
    /// The device's cloud-to-device queue is full (50 messages).
    QueueFull,
    /// The hub rejected the request as malformed (400) or too large (413).
    BadRequest,
    /// The hub failed (5xx other than 504).
    ServiceError,
    /// The hub could not be reached, or the connection broke (DNS, TCP, AMQP).
    Transport,
    /// TLS with the service failed in a way retrying does not fix: its certificate is not trusted
    /// (wrong `trusted_ca_pem`, wrong host name) or the handshake was refused.
    Tls,
    /// The hub sent something this client cannot make sense of.
    Protocol,
    /// The client (or the link) was closed.
    Closed,
}

impl ErrorKind {
    /// The kind an HTTP status maps to, refined by the hub's error code name.
    pub(crate) fn from_status(status: u16, code: Option<&str>) -> Self {
        match (status, code) {
            (404, Some(c)) if c.eq_ignore_ascii_case("DeviceNotOnline") || c == "404103" => {
                ErrorKind::DeviceNotOnline
            }
            (403, Some(c))
                if c.eq_ignore_ascii_case("DeviceMaximumQueueDepthExceeded") || c == "403004" =>
            {
                ErrorKind::QueueFull
            }
            (413, Some(c))
                if c.eq_ignore_ascii_case("ConfigurationCountLimitExceeded") || c == "413101" =>
            {
                ErrorKind::Forbidden
            }
            (400 | 413, _) => ErrorKind::BadRequest,
            (401, _) => ErrorKind::Unauthorized,
            (403, _) => ErrorKind::Forbidden,
            (404, _) => ErrorKind::NotFound,
            (408 | 504, _) => ErrorKind::Timeout,
            (409, _) => ErrorKind::AlreadyExists,
            (412, _) => ErrorKind::PreconditionFailed,
            (429, _) => ErrorKind::Throttled,
            _ => ErrorKind::ServiceError,
        }
    }
}

/// A service client error.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    status: Option<u16>,
    error_code: Option<String>,
    tracking_id: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            status: None,
            error_code: None,
            tracking_id: None,
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let mut error = Self::new(kind, message);
        error.source = Some(Box::new(source));
        error
    }

    /// An error the hub answered with: `status`, the error code name (`DeviceNotFound`) and
    /// tracking id when its body carried them.
    pub(crate) fn from_hub(
        status: u16,
        error_code: Option<String>,
        tracking_id: Option<String>,
        message: String,
    ) -> Self {
        let kind = ErrorKind::from_status(status, error_code.as_deref());
        let mut error = Self::new(kind, message);
        error.status = Some(status);
        error.error_code = error_code;
        error.tracking_id = tracking_id;
        error
    }

    /// The failure of one attempt shared by several callers (a reconnect they all waited
    /// for): each gets an error of the same kind and message, the original as its source.
    pub(crate) fn shared(error: &std::sync::Arc<Error>) -> Self {
        let mut shared = Self::new(error.kind, error.message.clone());
        shared.status = error.status;
        shared.error_code = error.error_code.clone();
        shared.tracking_id = error.tracking_id.clone();
        shared.source = Some(Box::new(SharedError(error.clone())));
        shared
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// An [`ErrorKind::InvalidArgument`] error: for clients built on this crate's
    /// [`Pipeline`](crate::http::Pipeline) that check their arguments before sending anything.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::invalid(message)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The HTTP status the hub answered with, if the error came from an HTTP answer.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The service's error code, if it gave one: IoT Hub's name (`DeviceNotFound`,
    /// `PreconditionFailed`, ...) or number, DPS's six-digit number (`404201`).
    pub fn error_code(&self) -> Option<&str> {
        self.error_code.as_deref()
    }

    /// The hub's tracking id for support requests, if it gave one.
    pub fn tracking_id(&self) -> Option<&str> {
        self.tracking_id.as_deref()
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        self.error_class().is_retryable()
    }
}

impl Classify for Error {
    fn error_class(&self) -> ErrorClass {
        match self.kind {
            ErrorKind::Throttled => ErrorClass::Throttled,
            ErrorKind::Transport | ErrorKind::Timeout | ErrorKind::ServiceError => {
                ErrorClass::Transient
            }
            _ => ErrorClass::Permanent,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {status}")?;
            if let Some(code) = &self.error_code {
                write!(f, ", {code}")?;
            }
            if let Some(id) = &self.tracking_id {
                write!(f, ", tracking id {id}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The original of a [`Error::shared`] failure, as its source: the original's own source
/// chain follows it.
#[derive(Debug)]
struct SharedError(std::sync::Arc<Error>);

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<azure_iot_core::connection_string::ConnectionStringError> for Error {
    fn from(e: azure_iot_core::connection_string::ConnectionStringError) -> Self {
        Self::with_source(ErrorKind::InvalidArgument, e.to_string(), e)
    }
}

/// What an error body says, in either of IoT Hub's two formats or DPS's.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct HubErrorBody {
    pub(crate) code: Option<String>,
    pub(crate) tracking_id: Option<String>,
    pub(crate) message: Option<String>,
}

impl HubErrorBody {
    /// Reads `body`; anything that is not a hub error body gives empty fields.
    ///
    /// Format 1: `{"Message":"ErrorCode:Name;text","ExceptionMessage":"Tracking ID:id-G:..."}`.
    /// Format 2: `Message` holds a JSON string with `errorCode` (number), `trackingId` and
    /// `message`. A top-level numeric `ErrorCode` (the emulator adds it) is ignored in favour of
    /// the name. DPS: `errorCode`, `trackingId` and `message` at the top level.
    pub(crate) fn parse(body: &[u8]) -> Self {
        let Ok(serde_json::Value::Object(doc)) = serde_json::from_slice(body) else {
            return Self::default();
        };
        // DPS: the fields at the top level.
        if doc.contains_key("errorCode") {
            return Self::from_fields(&doc);
        }
        let text = doc
            .get("Message")
            .or_else(|| doc.get("message"))
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        if let Ok(serde_json::Value::Object(inner)) = serde_json::from_str(text) {
            return Self::from_fields(&inner);
        }
        let mut parsed = Self::default();
        match text.strip_prefix("ErrorCode:") {
            Some(rest) => {
                let (code, message) = rest.split_once(';').unwrap_or((rest, ""));
                parsed.code = Some(code.trim().to_owned()).filter(|c| !c.is_empty());
                parsed.message = Some(message.trim().to_owned()).filter(|m| !m.is_empty());
            }
            None if !text.is_empty() => parsed.message = Some(text.to_owned()),
            None => {}
        }
        parsed.tracking_id = doc
            .get("ExceptionMessage")
            .and_then(|m| m.as_str())
            .and_then(|m| m.strip_prefix("Tracking ID:"))
            .map(|id| id.split("-G:").next().unwrap_or(id).trim().to_owned());
        parsed
    }

    /// `errorCode` (number or text), `trackingId` and `message` of a JSON object.
    fn from_fields(fields: &serde_json::Map<String, serde_json::Value>) -> Self {
        let text = |name: &str| fields.get(name).and_then(|t| t.as_str()).map(str::to_owned);
        Self {
            code: fields.get("errorCode").map(|c| match c {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            tracking_id: text("trackingId"),
            message: text("message"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_legacy_error_format() {
        let body = br#"{"Message":"ErrorCode:DeviceNotFound;Device d1 not found","ExceptionMessage":"Tracking ID:abc123-G:0-TimeStamp:01/01/2026 00:00:00","ErrorCode":404001}"#;
        let parsed = HubErrorBody::parse(body);
        assert_eq!(parsed.code.as_deref(), Some("DeviceNotFound"));
        assert_eq!(parsed.message.as_deref(), Some("Device d1 not found"));
        assert_eq!(parsed.tracking_id.as_deref(), Some("abc123"));
    }

    #[test]
    fn reads_the_json_in_a_string_format() {
        let body = br#"{"Message":"{\"errorCode\":404103,\"trackingId\":\"t-1\",\"message\":\"Timed out waiting for device to connect.\",\"info\":{}}"}"#;
        let parsed = HubErrorBody::parse(body);
        assert_eq!(parsed.code.as_deref(), Some("404103"));
        assert_eq!(parsed.tracking_id.as_deref(), Some("t-1"));
    }

    #[test]
    fn reads_the_dps_format() {
        let body = br#"{"errorCode":404201,"trackingId":"t-2","message":"Enrollment not found.","timestampUtc":"2026-12-03T10:00:00Z"}"#;
        let parsed = HubErrorBody::parse(body);
        assert_eq!(parsed.code.as_deref(), Some("404201"));
        assert_eq!(parsed.tracking_id.as_deref(), Some("t-2"));
        assert_eq!(parsed.message.as_deref(), Some("Enrollment not found."));
    }

    #[test]
    fn anything_else_gives_empty_fields() {
        for body in [&b""[..], b"<html>", b"[]", b"{\"Message\":5}"] {
            assert_eq!(HubErrorBody::parse(body), HubErrorBody::default());
        }
    }

    proptest::proptest! {
        #[test]
        fn any_body_is_read_without_panicking(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = HubErrorBody::parse(&body);
        }

        #[test]
        fn legacy_bodies_give_back_their_code(code in "[A-Za-z]{1,30}", text in "[^;\"\\\\]{0,40}") {
            let body = serde_json::json!({"Message": format!("ErrorCode:{code};{text}")}).to_string();
            let parsed = HubErrorBody::parse(body.as_bytes());
            proptest::prop_assert_eq!(parsed.code, Some(code));
        }
    }

    #[test]
    fn statuses_map_to_kinds() {
        assert_eq!(
            ErrorKind::from_status(404, Some("DeviceNotOnline")),
            ErrorKind::DeviceNotOnline
        );
        assert_eq!(
            ErrorKind::from_status(404, Some("DeviceNotFound")),
            ErrorKind::NotFound
        );
        assert_eq!(ErrorKind::from_status(504, None), ErrorKind::Timeout);
        assert_eq!(ErrorKind::from_status(503, None), ErrorKind::ServiceError);
        let throttled = Error::from_hub(429, None, None, "slow down".into());
        assert!(throttled.is_transient());
        let conflict = Error::from_hub(409, Some("DeviceAlreadyExists".into()), None, "x".into());
        assert!(!conflict.is_transient());
        assert_eq!(conflict.to_string(), "x (HTTP 409, DeviceAlreadyExists)");
    }
}
