//! The Device Provisioning Service's JSON bodies and names, shared by the provisioning clients
//! and the emulator's DPS.
//!
//! * [`registration`]: what a device sends to register and what DPS answers (the operation
//!   status and the registration result), the same over MQTT, HTTPS and AMQP.
//! * [`enrollment`]: the service API's individual enrollments, enrollment groups, attestation
//!   mechanisms, registration states, bulk operations and queries.
//! * [`ErrorDetails`]: the error body of every non-2xx answer.
//!
//! Field names and enum spellings follow DPS's REST specification (`2021-10-01`); every struct
//! keeps the members it does not model in `other`, so a get → change → update round trip never
//! drops a field the service added. Keys inside these bodies are secrets: the `Debug` forms
//! redact them.

pub mod enrollment;
pub mod registration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The api-version query parameter our clients send to DPS (device and service APIs).
pub const API_VERSION: &str = "2021-10-01";

/// AMQP application property naming the operation of a request message.
pub const AMQP_OPERATION_TYPE: &str = "iotdps-operation-type";
/// AMQP operation type of a register request.
pub const AMQP_OPERATION_REGISTER: &str = "iotdps-register";
/// AMQP operation type of an operation-status request.
pub const AMQP_OPERATION_STATUS: &str = "iotdps-get-operationstatus";
/// AMQP application property carrying the operation id of a status request.
pub const AMQP_OPERATION_ID: &str = "iotdps-operation-id";
/// AMQP application property asking DPS to register again although it has a result.
pub const AMQP_FORCE_REGISTRATION: &str = "iotdps-forceRegistration";
/// AMQP link property carrying the api-version.
pub const AMQP_API_VERSION: &str = "com.microsoft:api-version";
/// AMQP link property carrying the client's user agent.
pub const AMQP_CLIENT_VERSION: &str = "com.microsoft:client-version";
/// The retry hint DPS sends (HTTP header, MQTT topic parameter, AMQP application property):
/// whole seconds. The C# SDK reads `Retry-After`, the others `retry-after`; DPS answers AMQP
/// requests with both.
pub const RETRY_AFTER: &str = "retry-after";

/// The SAS key name devices put in their DPS tokens (`skn=registration`; Python omits it).
pub const DEVICE_KEY_NAME: &str = "registration";

/// The address of a device's DPS links and the resource of its SAS token:
/// `{idScope}/registrations/{registrationId}`.
pub fn registration_path(id_scope: &str, registration_id: &str) -> String {
    format!("{id_scope}/registrations/{registration_id}")
}

/// The error body DPS answers every failed request with (`ProvisioningServiceErrorDetails`).
///
/// `error_code` is six digits: the HTTP status followed by three (401002: unauthorised;
/// 404201: enrollment not found; 412xxx: ETag mismatch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetails {
    /// The six-digit error code.
    pub error_code: i64,
    /// An id for support requests.
    #[serde(default)]
    pub tracking_id: String,
    /// What went wrong.
    #[serde(default)]
    pub message: String,
    /// Extra facts, such as `retry-after` or the failing field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Map<String, Value>>,
    /// When it happened (UTC, ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_utc: Option<String>,
}

impl ErrorDetails {
    /// An error body with a code and a message.
    pub fn new(error_code: i64, message: impl Into<String>) -> Self {
        Self {
            error_code,
            tracking_id: String::new(),
            message: message.into(),
            info: None,
            timestamp_utc: None,
        }
    }

    /// The HTTP status the code starts with (`401002` → 401), if it has six digits.
    pub fn http_status(&self) -> Option<u16> {
        (100_000..1_000_000)
            .contains(&self.error_code)
            .then(|| u16::try_from(self.error_code / 1000).ok())
            .flatten()
    }
}

/// Twin contents given to a device when it is assigned: tags and desired properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitialTwin {
    /// Tags (a twin collection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Map<String, Value>>,
    /// Properties; only `desired` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<InitialTwinProperties>,
}

/// The properties part of an [`InitialTwin`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitialTwinProperties {
    /// Desired properties (a twin collection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<Map<String, Value>>,
}

/// What an X.509 certificate is, as DPS reports it (`X509CertificateInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509CertificateInfo {
    /// Subject distinguished name.
    #[serde(default)]
    pub subject_name: String,
    /// SHA-1 thumbprint, upper-case hex.
    #[serde(default)]
    pub sha1_thumbprint: String,
    /// SHA-256 thumbprint, upper-case hex.
    #[serde(default)]
    pub sha256_thumbprint: String,
    /// Issuer distinguished name.
    #[serde(default)]
    pub issuer_name: String,
    /// Start of validity (UTC, ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_utc: Option<String>,
    /// End of validity (UTC, ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after_utc: Option<String>,
    /// Serial number, upper-case hex.
    #[serde(default)]
    pub serial_number: String,
    /// X.509 version (3 for v3).
    #[serde(default)]
    pub version: i64,
}

/// Redacts a secret string in `Debug` output, keeping whether it is set.
pub(crate) fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() { "" } else { "<redacted>" }
}

#[cfg(test)]
mod tests;
