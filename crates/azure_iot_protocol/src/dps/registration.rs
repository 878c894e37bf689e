//! The device side of DPS: the register request, the operation status and the registration
//! result (`DeviceRegistration`, `RegistrationOperationStatus`, `DeviceRegistrationResult`).
//!
//! The same JSON travels over MQTT (publish payloads), HTTPS (bodies) and AMQP (data sections).
//! Clients differ in what they send: Python always writes `"payload": null`, Node omits it, C#
//! sends an empty body over MQTT and AMQP (the registration id then comes from the connection).
//! [`RegistrationRequest::from_body`] reads all of them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::X509CertificateInfo;

/// What a device sends to register (`DeviceRegistration`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationRequest {
    /// The registration id; the emulator takes it from the connection when absent (C#).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<String>,
    /// Custom data for a custom allocation webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// The TPM's endorsement and storage root keys (TPM attestation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmRegistration>,
}

impl RegistrationRequest {
    /// Reads a register body: empty (or whitespace) is an empty request; `null` payloads are
    /// absent.
    pub fn from_body(body: &[u8]) -> Result<Self, serde_json::Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let mut request: Self = serde_json::from_slice(body)?;
        if request.payload == Some(Value::Null) {
            request.payload = None;
        }
        Ok(request)
    }
}

/// The TPM keys of a register request, base64 of `TPM2B_PUBLIC` structures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TpmRegistration {
    /// The endorsement key.
    pub endorsement_key: String,
    /// The storage root key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_root_key: Option<String>,
}

/// Where a registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RegistrationStatus {
    /// Not assigned (yet).
    Unassigned,
    /// DPS is working on it: poll again after `retry-after`.
    Assigning,
    /// Assigned to a hub.
    Assigned,
    /// It failed; `errorCode` and `errorMessage` say why.
    Failed,
    /// The enrollment or group is disabled.
    Disabled,
}

impl RegistrationStatus {
    /// Is this final (no more polling)?
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Unassigned | Self::Assigning)
    }
}

/// What happened on an assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RegistrationSubstatus {
    /// First assignment of this registration.
    InitialAssignment,
    /// Moved to another hub with its twin.
    DeviceDataMigrated,
    /// Moved to another hub, twin reset to the enrollment's initial twin.
    DeviceDataReset,
    /// Re-provisioned to its first hub.
    ReprovisionedToInitialAssignment,
}

/// DPS's answer to a register or status request (`RegistrationOperationStatus`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// The operation to poll.
    pub operation_id: String,
    /// Where it stands.
    pub status: RegistrationStatus,
    /// The result so far (always present once final).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_state: Option<RegistrationResult>,
}

/// The result of a registration (`DeviceRegistrationResult`); also what the service API's
/// registration states hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationResult {
    /// The registration id.
    pub registration_id: String,
    /// When it was first registered (UTC, ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    /// The host name of the assigned hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    /// The device id at the assigned hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Where it stands.
    pub status: RegistrationStatus,
    /// What happened on assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<RegistrationSubstatus>,
    /// Why it failed: six digits, HTTP status first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    /// Why it failed, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// When it last changed (UTC, ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
    /// Version of this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Data a custom allocation webhook returned for the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Set for symmetric-key attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<SymmetricKeyRegistrationResult>,
    /// Set for X.509 attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509: Option<X509RegistrationResult>,
    /// Set for TPM attestation: the activation blob of the hub key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmRegistrationResult>,
    /// Members not modelled here, kept for round trips.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl RegistrationResult {
    /// A result for `registration_id` with only a status.
    pub fn new(registration_id: impl Into<String>, status: RegistrationStatus) -> Self {
        Self {
            registration_id: registration_id.into(),
            created_date_time_utc: None,
            assigned_hub: None,
            device_id: None,
            status,
            substatus: None,
            error_code: None,
            error_message: None,
            last_updated_date_time_utc: None,
            etag: None,
            payload: None,
            symmetric_key: None,
            x509: None,
            tpm: None,
            other: Map::new(),
        }
    }
}

/// The symmetric-key part of a [`RegistrationResult`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKeyRegistrationResult {
    /// The group the registration matched, if it was a group's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_group_id: Option<String>,
}

/// The X.509 part of a [`RegistrationResult`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509RegistrationResult {
    /// The device's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_info: Option<X509CertificateInfo>,
    /// The group the registration matched, if it was a group's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_group_id: Option<String>,
    /// The group certificate the chain reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_certificate_info: Option<X509CertificateInfo>,
}

/// The TPM part of a [`RegistrationResult`].
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TpmRegistrationResult {
    /// Base64 activation blob carrying the hub key for the device's TPM.
    #[serde(default)]
    pub authentication_key: String,
}

impl std::fmt::Debug for TpmRegistrationResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmRegistrationResult")
            .field(
                "authentication_key",
                &super::redacted(&self.authentication_key),
            )
            .finish()
    }
}
