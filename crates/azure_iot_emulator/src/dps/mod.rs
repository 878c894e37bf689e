//! The Device Provisioning Service (ADR 9): enrollments, enrollment groups, registration
//! records and the registration flow, owned by an actor of its own beside the hub.
//!
//! Front-ends (HTTPS here, MQTT and AMQP in their modules) turn what a device sends into a
//! [`DeviceLogin`] and call [`Dps::authenticate`], [`Dps::register`] and
//! [`Dps::operation_status`]; every DPS rule (attestation, allocation, hub identity, error codes)
//! lives behind those three calls, so the transports cannot disagree.

// The front-ends arrive in steps (HTTPS here, MQTT and AMQP on dps-wire).
#![allow(dead_code)]

mod records;
mod state;
mod store;

use azure_iot_protocol::dps::ErrorDetails;
use azure_iot_protocol::dps::registration::{OperationStatus, RegistrationRequest};
use rustls_pki_types::CertificateDer;

/// Who is registering, as the front-end saw it.
#[derive(Debug, Clone)]
pub(crate) struct DeviceLogin {
    /// The id scope the device named (MQTT user name, HTTPS path, AMQP address).
    pub(crate) id_scope: String,
    /// The registration id the device named.
    pub(crate) registration_id: String,
    /// What it proves itself with.
    pub(crate) credential: DeviceCredential,
}

/// What a device proves itself with.
#[derive(Clone)]
pub(crate) enum DeviceCredential {
    /// A SAS token as sent (`SharedAccessSignature sr=…&sig=…&se=…[&skn=registration]`),
    /// verified over `sr` exactly as it appears in the token.
    SasToken(String),
    /// The TLS client certificate chain, leaf first.
    X509(Vec<CertificateDer<'static>>),
}

impl std::fmt::Debug for DeviceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SasToken(_) => f.write_str("SasToken(<redacted>)"),
            Self::X509(chain) => write!(f, "X509({} certificates)", chain.len()),
        }
    }
}

/// A successful answer: 200 (final) or 202 (assigning, poll after `retry_after` seconds).
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// 200 or 202.
    pub(crate) status: u16,
    /// The operation status body.
    pub(crate) body: OperationStatus,
    /// Seconds to wait before polling (202 only).
    pub(crate) retry_after: Option<u32>,
}

/// A refused request: HTTP-style status (401, 404, 429, …), DPS's error body, optional retry
/// hint.
#[derive(Debug, Clone)]
pub(crate) struct DpsError {
    /// The HTTP status (front-ends map it to their own form).
    pub(crate) status: u16,
    /// DPS's error body.
    pub(crate) details: ErrorDetails,
    /// Seconds to wait before trying again, if the refusal is temporary.
    pub(crate) retry_after: Option<u32>,
}

impl DpsError {
    /// An error with a six-digit DPS code; the status is the code's first three digits.
    pub(crate) fn new(error_code: i64, message: impl Into<String>) -> Self {
        let details = ErrorDetails::new(error_code, message);
        Self {
            status: details.http_status().unwrap_or(500),
            details,
            retry_after: None,
        }
    }

    /// 503: what is not finished yet.
    pub(crate) fn not_finished(what: &str) -> Self {
        Self::new(
            503000,
            format!("{what} is not finished in this emulator yet"),
        )
    }
}

impl std::fmt::Display for DpsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.details.message, self.details.error_code)
    }
}

/// A handle on the DPS actor (ADR 9); cheap to clone. `Emulator` owns one; the MQTT and AMQP
/// front-ends receive a clone in their context structs.
#[derive(Clone)]
pub(crate) struct Dps {
    id_scope: std::sync::Arc<str>,
}

impl Dps {
    /// Checks the credential for `login` (unknown id scope → 404; wrong key, unknown
    /// registration, foreign chain → 401 with 401002). Front-ends call it when the connection
    /// opens (MQTT CONNECT, AMQP SASL or first link); refused → CONNACK 5 / SASL auth failure.
    pub(crate) async fn authenticate(&self, login: &DeviceLogin) -> Result<(), DpsError> {
        let _ = login;
        Err(DpsError::not_finished("DPS authentication"))
    }

    /// A register request (`force` = forceRegistration). The registration id in `request`, when
    /// present, must equal `login.registration_id` (C# sends none: the login's is used).
    pub(crate) async fn register(
        &self,
        login: &DeviceLogin,
        request: RegistrationRequest,
        force: bool,
    ) -> Result<Answer, DpsError> {
        let _ = (login, request, force);
        Err(DpsError::not_finished("DPS registration"))
    }

    /// A poll for `operation_id` of this registration.
    pub(crate) async fn operation_status(
        &self,
        login: &DeviceLogin,
        operation_id: &str,
    ) -> Result<Answer, DpsError> {
        let _ = (login, operation_id);
        Err(DpsError::not_finished("DPS operation status"))
    }

    /// The DPS id scope (to tell an unknown scope from ours early).
    pub(crate) fn id_scope(&self) -> &str {
        &self.id_scope
    }
}

impl Dps {
    /// A DPS handle for `id_scope` (the actor behind it comes with the DPS state).
    pub(crate) fn new(id_scope: &str) -> Self {
        Self {
            id_scope: std::sync::Arc::from(id_scope),
        }
    }
}
