//! The DPS service API's bodies: individual enrollments, enrollment groups, attestation
//! mechanisms, registration states, bulk operations, queries and the custom allocation
//! webhook's request and answer.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::registration::RegistrationResult;
use super::{InitialTwin, X509CertificateInfo, redacted};

/// A registration state as the service API returns it (`DeviceRegistrationState`): the same
/// record a device reads at the end of its registration.
pub type RegistrationState = RegistrationResult;

/// Whether devices may register under an enrollment or group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProvisioningStatus {
    /// Devices may register (the default).
    #[default]
    Enabled,
    /// Registrations are refused.
    Disabled,
}

/// How DPS picks a hub among the linked ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AllocationPolicy {
    /// Evenly, by a hash of the registration id.
    Hashed,
    /// The hub with the lowest latency to the device.
    GeoLatency,
    /// The one hub named in `iotHubs` (or `iotHubHostName`).
    Static,
    /// A webhook chooses ([`CustomAllocationDefinition`]).
    Custom,
}

/// What happens when an assigned device registers again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReprovisionPolicy {
    /// Re-evaluate the hub assignment (false: "never re-provision").
    #[serde(default = "yes")]
    pub update_hub_assignment: bool,
    /// Carry the twin to the new hub (false: reset it to the initial twin).
    #[serde(default = "yes")]
    pub migrate_device_data: bool,
}

fn yes() -> bool {
    true
}

impl Default for ReprovisionPolicy {
    fn default() -> Self {
        Self {
            update_hub_assignment: true,
            migrate_device_data: true,
        }
    }
}

/// The webhook a custom allocation calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomAllocationDefinition {
    /// The HTTPS URL DPS posts the [`AllocationRequest`] to.
    pub webhook_url: String,
    /// The webhook API version (at least `2018-09-01-preview`).
    pub api_version: String,
}

/// Device capabilities set on the hub identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCapabilities {
    /// The device is an IoT Edge device.
    #[serde(default)]
    pub iot_edge: bool,
}

/// How devices of an enrollment or group prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttestationType {
    /// No attestation (not accepted by DPS for registrations).
    None,
    /// A TPM's endorsement key.
    Tpm,
    /// X.509 certificates.
    X509,
    /// Shared symmetric keys.
    SymmetricKey,
}

/// An attestation mechanism (`AttestationMechanism`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attestation {
    /// Which of the members below applies.
    #[serde(rename = "type")]
    pub kind: AttestationType,
    /// TPM attestation (individual enrollments only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmAttestation>,
    /// X.509 attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509: Option<X509Attestation>,
    /// Symmetric-key attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<SymmetricKeyAttestation>,
}

impl Attestation {
    /// Symmetric-key attestation; empty keys ask DPS to generate them.
    pub fn symmetric_key(primary_key: impl Into<String>, secondary_key: impl Into<String>) -> Self {
        Self {
            kind: AttestationType::SymmetricKey,
            tpm: None,
            x509: None,
            symmetric_key: Some(SymmetricKeyAttestation {
                primary_key: primary_key.into(),
                secondary_key: secondary_key.into(),
            }),
        }
    }

    /// X.509 attestation.
    pub fn x509(x509: X509Attestation) -> Self {
        Self {
            kind: AttestationType::X509,
            tpm: None,
            x509: Some(x509),
            symmetric_key: None,
        }
    }

    /// TPM attestation by endorsement key (base64 `TPM2B_PUBLIC`).
    pub fn tpm(endorsement_key: impl Into<String>) -> Self {
        Self {
            kind: AttestationType::Tpm,
            tpm: Some(TpmAttestation {
                endorsement_key: endorsement_key.into(),
                storage_root_key: None,
            }),
            x509: None,
            symmetric_key: None,
        }
    }
}

/// TPM attestation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TpmAttestation {
    /// The endorsement key, base64 `TPM2B_PUBLIC`.
    pub endorsement_key: String,
    /// The storage root key, base64 `TPM2B_PUBLIC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_root_key: Option<String>,
}

/// A shared-key pair (base64).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKeyAttestation {
    /// The primary key.
    #[serde(default)]
    pub primary_key: String,
    /// The secondary key.
    #[serde(default)]
    pub secondary_key: String,
}

impl std::fmt::Debug for SymmetricKeyAttestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SymmetricKeyAttestation")
            .field("primary_key", &redacted(&self.primary_key))
            .field("secondary_key", &redacted(&self.secondary_key))
            .finish()
    }
}

/// X.509 attestation: device certificates (individual), signing certificates or CA references
/// (groups).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Attestation {
    /// The device's own certificates (individual enrollments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificates: Option<X509Certificates>,
    /// Root or intermediate certificates the device chain must reach (groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_certificates: Option<X509Certificates>,
    /// Names of CA certificates registered with DPS (groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_references: Option<X509CaReferences>,
}

/// A primary and an optional secondary certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Certificates {
    /// The primary certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<X509CertificateWithInfo>,
    /// The secondary certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<X509CertificateWithInfo>,
}

/// A certificate as sent (PEM, base64 of PEM or base64 of DER) and as DPS describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509CertificateWithInfo {
    /// The certificate; DPS answers with `null` here and the `info` filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// What DPS read from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<X509CertificateInfo>,
}

/// Names of CA certificates registered with DPS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509CaReferences {
    /// The primary CA's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// The secondary CA's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<String>,
}

/// What individual enrollments and enrollment groups share: how their devices are set up at
/// the hub, whether they may register, how the hub is chosen, and the record's version and
/// times. On the wire these are members of the enrollment's own JSON object (flattened).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentSettings {
    /// Device capabilities set on the hub identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<DeviceCapabilities>,
    /// The twin given to each device on assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_twin: Option<InitialTwin>,
    /// Whether devices may register.
    #[serde(default)]
    pub provisioning_status: ProvisioningStatus,
    /// What happens on re-registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprovision_policy: Option<ReprovisionPolicy>,
    /// How the hub is chosen (default: the service's policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_policy: Option<AllocationPolicy>,
    /// The hubs devices may be assigned to (host names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iot_hubs: Option<Vec<String>>,
    /// The legacy single hub host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iot_hub_host_name: Option<String>,
    /// The webhook of a custom allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_allocation_definition: Option<CustomAllocationDefinition>,
    /// Version; send it back in `If-Match` to update only this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// When it was created (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    /// When it last changed (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
}

/// An individual enrollment (`IndividualEnrollment`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndividualEnrollment {
    /// The registration id the device registers with.
    pub registration_id: String,
    /// The hub device id (default: the registration id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// How the device proves who it is.
    pub attestation: Attestation,
    /// The device's registration, once it registered (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_state: Option<RegistrationState>,
    /// What it shares with enrollment groups (before `other`, which takes what is left).
    #[serde(flatten)]
    pub settings: EnrollmentSettings,
    /// Members not modelled here (such as `optionalDeviceInformation`), kept for round trips.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl IndividualEnrollment {
    /// An enabled enrollment with the service's defaults for everything else.
    pub fn new(registration_id: impl Into<String>, attestation: Attestation) -> Self {
        Self {
            registration_id: registration_id.into(),
            device_id: None,
            attestation,
            registration_state: None,
            settings: EnrollmentSettings::default(),
            other: Map::new(),
        }
    }
}

/// An enrollment group (`EnrollmentGroup`): devices that share a group key or a signing
/// certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentGroup {
    /// The group's id.
    pub enrollment_group_id: String,
    /// How its devices prove who they are (symmetric key or X.509).
    pub attestation: Attestation,
    /// What it shares with individual enrollments (before `other`, which takes what is left).
    #[serde(flatten)]
    pub settings: EnrollmentSettings,
    /// Members not modelled here, kept for round trips.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl EnrollmentGroup {
    /// An enabled group with the service's defaults for everything else.
    pub fn new(enrollment_group_id: impl Into<String>, attestation: Attestation) -> Self {
        Self {
            enrollment_group_id: enrollment_group_id.into(),
            attestation,
            settings: EnrollmentSettings::default(),
            other: Map::new(),
        }
    }
}

/// What individual enrollments and enrollment groups share, for code that treats both alike
/// (stores, command lines, allocation).
pub trait Enrollment {
    /// The id: a registration id or an enrollment group id.
    fn id(&self) -> &str;
    /// How devices prove who they are.
    fn attestation(&self) -> &Attestation;
    /// How devices prove who they are, to change.
    fn attestation_mut(&mut self) -> &mut Attestation;
    /// The shared settings.
    fn settings(&self) -> &EnrollmentSettings;
    /// The shared settings, to change.
    fn settings_mut(&mut self) -> &mut EnrollmentSettings;
}

/// Implements [`Enrollment`] for a type whose id is the field `$id`.
macro_rules! impl_enrollment {
    ($type:ty, $id:ident) => {
        impl Enrollment for $type {
            fn id(&self) -> &str {
                &self.$id
            }
            fn attestation(&self) -> &Attestation {
                &self.attestation
            }
            fn attestation_mut(&mut self) -> &mut Attestation {
                &mut self.attestation
            }
            fn settings(&self) -> &EnrollmentSettings {
                &self.settings
            }
            fn settings_mut(&mut self) -> &mut EnrollmentSettings {
                &mut self.settings
            }
        }
    };
}

impl_enrollment!(IndividualEnrollment, registration_id);
impl_enrollment!(EnrollmentGroup, enrollment_group_id);

/// What a bulk operation does to each item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BulkMode {
    /// Create; an existing one is an error.
    Create,
    /// Create or replace.
    Update,
    /// Replace only the version named by the item's `etag`.
    #[serde(rename = "updateIfMatchETag")]
    UpdateIfMatchEtag,
    /// Delete.
    Delete,
}

impl<'de> Deserialize<'de> for BulkMode {
    /// Case-insensitive: Node spells `updateIfMatchEtag`, the specification `updateIfMatchETag`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.to_ascii_lowercase().as_str() {
            "create" => Ok(Self::Create),
            "update" => Ok(Self::Update),
            "updateifmatchetag" => Ok(Self::UpdateIfMatchEtag),
            "delete" => Ok(Self::Delete),
            _ => Err(serde::de::Error::unknown_variant(
                &text,
                &["create", "update", "updateIfMatchETag", "delete"],
            )),
        }
    }
}

/// A bulk operation on individual enrollments (`POST /enrollments`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkEnrollmentOperation {
    /// What to do to each.
    pub mode: BulkMode,
    /// The enrollments (at most 10 per call).
    pub enrollments: Vec<IndividualEnrollment>,
}

/// A bulk operation on enrollment groups (`POST /enrollmentGroups`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkEnrollmentGroupOperation {
    /// What to do to each.
    pub mode: BulkMode,
    /// The groups (at most 10 per call).
    pub enrollment_groups: Vec<EnrollmentGroup>,
}

/// The answer to a bulk operation: which items failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkOperationResult {
    /// Did every item succeed?
    pub is_successful: bool,
    /// The items that failed.
    #[serde(default)]
    pub errors: Vec<BulkOperationError>,
}

/// One failed item of a bulk operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkOperationError {
    /// The enrollment's registration id (individual enrollments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<String>,
    /// The group's id (enrollment groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_group_id: Option<String>,
    /// Six-digit error code.
    pub error_code: i64,
    /// Why it failed.
    #[serde(default)]
    pub error_status: String,
}

/// A query body: `{"query": "SELECT * FROM enrollments"}` (Node sends `"*"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuerySpecification {
    /// The query text.
    pub query: String,
}

/// Query response header naming the kind of items (`x-ms-item-type`), in the PascalCase the C
/// SDK compares case-sensitively.
pub mod item_type {
    /// Individual enrollments.
    pub const ENROLLMENT: &str = "Enrollment";
    /// Enrollment groups.
    pub const ENROLLMENT_GROUP: &str = "EnrollmentGroup";
    /// Registration states.
    pub const DEVICE_REGISTRATION: &str = "DeviceRegistration";
}

/// What DPS posts to a custom allocation webhook (`AllocationRequest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationRequest {
    /// The individual enrollment the device matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub individual_enrollment: Option<IndividualEnrollment>,
    /// The group the device matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_group: Option<EnrollmentGroup>,
    /// About the device and its request.
    pub device_runtime_context: DeviceRuntimeContext,
    /// The hubs the webhook may choose from (host names).
    pub linked_hubs: Vec<String>,
}

/// The device part of an [`AllocationRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRuntimeContext {
    /// The registration id.
    pub registration_id: String,
    /// The hub it is assigned to now, on re-registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_iot_hub_host_name: Option<String>,
    /// Its device id now, on re-registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_device_id: Option<String>,
    /// The payload the device sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Attestation facts (`x509`, `symmetricKey`, `tpm`), as DPS saw them.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// What a custom allocation webhook answers (`AllocationResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationResponse {
    /// The chosen hub; must be one of the linked hubs.
    pub iot_hub_host_name: String,
    /// The device id to use (default: the registration id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The twin to give the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_twin: Option<InitialTwin>,
    /// Data returned to the device in its registration result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}
