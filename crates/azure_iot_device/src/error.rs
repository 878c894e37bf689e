//! The crate's error type: an opaque [`Error`] with a [`kind`](Error::kind).
//!
//! Messages name what went wrong and never include a key, token or password.

use std::fmt;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An argument (connection string, key, certificate, message) is invalid; nothing was sent.
    InvalidArgument,
    /// The hub could not be reached (DNS, TCP, TLS).
    Connect,
    /// The hub refused the credentials (CONNACK 4 or 5), or answered 401.
    Unauthorized,
    /// The hub refused the connection for another reason (CONNACK code in the message).
    Refused,
    /// The operation did not finish within the client's operation timeout.
    Timeout,
    /// The connection was lost before the operation finished.
    Disconnected,
    /// The client was closed.
    Closed,
    /// The hub answered a twin request with an error status.
    Status(u16),
    /// The hub sent something this client cannot make sense of.
    Protocol,
    /// The transport cannot do this (for example, abandoning or rejecting a cloud-to-device
    /// message over MQTT, where IoT Hub allows only completion).
    Unsupported,
}

/// A device client error.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    pub(crate) fn with_boxed_source(
        mut self,
        source: Box<dyn std::error::Error + Send + Sync>,
    ) -> Self {
        self.source = Some(source);
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        match self.kind {
            ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::Disconnected => true,
            ErrorKind::Status(status) => status == 429 || status >= 500,
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<azure_iot_core::message::MessageError> for Error {
    /// A message that cannot be built (too large, a bad property name) is an invalid argument.
    fn from(e: azure_iot_core::message::MessageError) -> Self {
        Self::with_source(ErrorKind::InvalidArgument, e.to_string(), e)
    }
}
