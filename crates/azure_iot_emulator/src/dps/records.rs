//! What the DPS actor keeps: registration records, the error codes it answers with, and the
//! common shape of individual enrollments and enrollment groups.

use azure_iot_protocol::dps::enrollment::{EnrollmentGroup, IndividualEnrollment};
use azure_iot_protocol::dps::registration::RegistrationResult;
use serde::{Deserialize, Serialize};

use super::DpsError;
use super::store::{Change, Table};

/// The six-digit error codes the emulator's DPS answers with: the HTTP status followed by
/// three digits (ADR 14 lists them).
pub(crate) mod code {
    /// A malformed or invalid request (body, id, attestation).
    pub(crate) const BAD_REQUEST: i64 = 400_004;
    /// A custom allocation webhook failed (timeout, error, garbage).
    pub(crate) const ALLOCATION_FAILED: i64 = 400_207;
    /// No linked hub fits the allocation.
    pub(crate) const NO_HUB: i64 = 400_208;
    /// Credentials missing, wrong, expired, or naming another registration.
    pub(crate) const UNAUTHORIZED: i64 = 401_002;
    /// The id scope is not this DPS's.
    pub(crate) const SCOPE_NOT_FOUND: i64 = 404_001;
    /// No individual enrollment with that registration id.
    pub(crate) const ENROLLMENT_NOT_FOUND: i64 = 404_201;
    /// No registration record with that registration id.
    pub(crate) const REGISTRATION_NOT_FOUND: i64 = 404_202;
    /// No enrollment group with that id.
    pub(crate) const GROUP_NOT_FOUND: i64 = 404_203;
    /// No operation with that id for the registration.
    pub(crate) const OPERATION_NOT_FOUND: i64 = 404_204;
    /// The path or method is not part of the DPS API.
    pub(crate) const NOT_FOUND: i64 = 404_000;
    /// A create of something that exists.
    pub(crate) const CONFLICT: i64 = 409_201;
    /// `If-Match` names another version.
    pub(crate) const PRECONDITION_FAILED: i64 = 412_002;
    /// The request body is over the size limit.
    pub(crate) const TOO_LARGE: i64 = 413_000;
    /// The emulator failed (storage, hub gone).
    pub(crate) const INTERNAL: i64 = 500_000;
}

impl DpsError {
    /// 400 with [`code::BAD_REQUEST`].
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(code::BAD_REQUEST, message)
    }

    /// 401 with [`code::UNAUTHORIZED`].
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(code::UNAUTHORIZED, message)
    }

    /// 500: the emulator failed.
    pub(crate) fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(
            code::INTERNAL,
            format!("the provisioning service failed: {message}"),
        )
    }
}

impl From<crate::error::EmulatorError> for DpsError {
    fn from(e: crate::error::EmulatorError) -> Self {
        Self::internal(e)
    }
}

/// A registration as DPS keeps it: its state (what the service API and the device read) and
/// the operation the device polls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RegistrationRecord {
    /// The registration state (`DeviceRegistrationState`).
    pub(crate) state: RegistrationResult,
    /// The id of the last register operation.
    pub(crate) operation_id: String,
    /// The group the registration matched (`None`: an individual enrollment).
    pub(crate) enrollment_group_id: Option<String>,
}

/// What individual enrollments and enrollment groups share in the DPS store, so the service
/// API's create, update, ETag and delete rules are written once. The fields they share are
/// the protocol's ([`azure_iot_protocol::dps::enrollment::Enrollment`]).
pub(crate) trait Enrollment:
    azure_iot_protocol::dps::enrollment::Enrollment + Clone + Serialize + Send + 'static
{
    /// `enrollment` or `enrollment group`, for messages.
    const KIND: &'static str;
    /// Its table.
    const TABLE: Table;
    /// The not-found code.
    const NOT_FOUND: i64;
    /// The store change that writes it.
    fn change(&self) -> Change<'_>;
}

impl Enrollment for IndividualEnrollment {
    const KIND: &'static str = "enrollment";
    const TABLE: Table = Table::Enrollments;
    const NOT_FOUND: i64 = code::ENROLLMENT_NOT_FOUND;
    fn change(&self) -> Change<'_> {
        Change::PutEnrollment(self)
    }
}

impl Enrollment for EnrollmentGroup {
    const KIND: &'static str = "enrollment group";
    const TABLE: Table = Table::Groups;
    const NOT_FOUND: i64 = code::GROUP_NOT_FOUND;
    fn change(&self) -> Change<'_> {
        Change::PutGroup(self)
    }
}
