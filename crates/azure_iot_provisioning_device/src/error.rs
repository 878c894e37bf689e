//! The crate's error type: what went wrong with a registration, typed so that a caller can
//! tell a refused key from a disabled enrollment from an unreachable service.
//!
//! Messages come from DPS (its `message` / `errorMessage`) or name the failing step; they never
//! hold a key, a token or a certificate's private key.

use std::time::Duration;

/// Why a registration did not give an assignment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument (id scope, registration id, key, certificate, payload) is unusable; nothing
    /// was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// DPS refused the credentials: a wrong or foreign key, an unknown registration, an
    /// unknown id scope, a certificate no enrollment accepts (HTTP 401, MQTT CONNACK 4/5,
    /// AMQP SASL failure).
    #[error("DPS refused the credentials{}: {message}", code_text(*error_code))]
    Unauthorized {
        /// DPS's six-digit error code (401002), when it sent one (not over MQTT CONNACK or
        /// SASL, which carry none).
        error_code: Option<i64>,
        /// What DPS said.
        message: String,
    },
    /// DPS answered 404: no such id scope, registration or operation.
    #[error("DPS found no such registration or operation{}: {message}", code_text(*error_code))]
    NotFound {
        /// DPS's six-digit error code.
        error_code: Option<i64>,
        /// What DPS said.
        message: String,
    },
    /// The enrollment (or its group) is disabled: DPS finished the registration with status
    /// `disabled`.
    #[error("the enrollment is disabled{}: {message}", code_text(*error_code))]
    Disabled {
        /// DPS's six-digit error code, if the registration state carries one.
        error_code: Option<i64>,
        /// DPS's error message, if any.
        message: String,
    },
    /// DPS finished the registration with status `failed` (for example 400208: no hub to
    /// assign to).
    #[error("the registration failed{}: {message}", code_text(*error_code))]
    Failed {
        /// DPS's six-digit error code.
        error_code: Option<i64>,
        /// DPS's error message.
        message: String,
    },
    /// DPS refused the request with another status (300–428 except 401 and 404).
    #[error("DPS answered {status}{}: {message}", code_text(*error_code))]
    Service {
        /// The HTTP-style status.
        status: u16,
        /// DPS's six-digit error code.
        error_code: Option<i64>,
        /// What DPS said.
        message: String,
    },
    /// The registration had not finished within the overall timeout
    /// ([`ProvisioningDeviceClientBuilder::timeout`](crate::ProvisioningDeviceClientBuilder::timeout)).
    #[error("the registration did not finish within {0:?}")]
    Timeout(Duration),
    /// The service could not be reached or the connection broke (DNS, TCP, TLS, WebSocket,
    /// proxy, AMQP or MQTT session).
    #[error("transport: {message}")]
    Transport {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The device client for the assigned hub could not connect (see its
    /// [`kind`](azure_iot_device::Error::kind)).
    #[error("connecting to the assigned hub: {0}")]
    DeviceClient(#[source] azure_iot_device::Error),
    /// DPS sent something this client cannot read.
    #[error("DPS sent something unreadable: {0}")]
    Protocol(String),
    /// The TPM failed a step of TPM attestation (not there, refused a command, or refused
    /// DPS's activation blob).
    #[error("TPM: {step} failed: {source}")]
    Tpm {
        /// The step: opening the TPM, creating the endorsement key, activating DPS's identity
        /// key, signing the SAS token, …
        step: &'static str,
        /// What the TPM layer reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The combination asked for is not supported (TPM attestation over MQTT).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// `" (error code N)"` or nothing.
fn code_text(code: Option<i64>) -> String {
    code.map(|c| format!(" (error code {c})"))
        .unwrap_or_default()
}

impl Error {
    /// A transport failure with its cause.
    pub(crate) fn transport(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Transport {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// DPS's six-digit error code, when the error carries one.
    pub fn error_code(&self) -> Option<i64> {
        match self {
            Self::Unauthorized { error_code, .. }
            | Self::NotFound { error_code, .. }
            | Self::Disabled { error_code, .. }
            | Self::Failed { error_code, .. }
            | Self::Service { error_code, .. } => *error_code,
            _ => None,
        }
    }

    /// Whether trying again later may succeed (a timeout or a transport failure).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Transport { .. })
    }
}

impl From<azure_iot_device::Error> for Error {
    /// The device crate's dialling errors: a bad certificate or host is an invalid argument,
    /// a refused proxy login unauthorised, anything else a transport failure.
    fn from(e: azure_iot_device::Error) -> Self {
        use azure_iot_device::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidArgument => Self::InvalidArgument(e.to_string()),
            _ => Self::Transport {
                message: e.to_string(),
                source: Some(Box::new(e)),
            },
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
