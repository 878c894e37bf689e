//! Azure IoT Hub Device Provisioning Service (DPS) service client: the back end's half of DPS.
//!
//! Individual enrollments and enrollment groups (create or update with an optional ETag
//! condition, get, delete, their attestation mechanism, bulk operations, paged queries) and
//! the registration states devices leave behind (get, delete, query by group), against the
//! real DPS or this project's emulator.
//!
//! ```no_run
//! # async fn run() -> Result<(), azure_iot_provisioning_service::Error> {
//! use azure_iot_provisioning_service::{
//!     Attestation, BulkEnrollmentOperation, BulkMode, EnrollmentGroup, ErrorKind, IfMatch,
//!     IndividualEnrollment, ProvisioningServiceClient, ProvisioningServiceClientOptions,
//! };
//! use futures_util::TryStreamExt;
//!
//! let dps = ProvisioningServiceClient::from_connection_string(
//!     "HostName=mydps.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=...",
//!     ProvisioningServiceClientOptions::default(),
//! )?;
//!
//! // A group whose devices register with keys derived from the group key.
//! let group = EnrollmentGroup::new("floor-3", Attestation::symmetric_key("", ""));
//! let group = dps.create_or_update_enrollment_group(&group, IfMatch::Any).await?;
//!
//! // Change it only if nobody else did in between.
//! let mut changed = group.clone();
//! changed.settings.capabilities = Some(Default::default());
//! match dps
//!     .create_or_update_enrollment_group(&changed, IfMatch::etag_or_any(group.settings.etag.as_deref()))
//!     .await
//! {
//!     Err(e) if e.kind() == ErrorKind::PreconditionFailed => println!("changed meanwhile"),
//!     other => drop(other?),
//! }
//!
//! // Ten individual enrollments at once; failed items come back one by one.
//! let enrollments = (0..10)
//!     .map(|i| IndividualEnrollment::new(format!("dev-{i}"), Attestation::symmetric_key("", "")))
//!     .collect();
//! let result = dps
//!     .bulk_enrollments(&BulkEnrollmentOperation { mode: BulkMode::Create, enrollments })
//!     .await?;
//! for error in &result.errors {
//!     println!("{:?}: {} {}", error.registration_id, error.error_code, error.error_status);
//! }
//!
//! // Every enrollment, page by page, and the devices of the group that registered.
//! let mut all = dps.query_enrollments("SELECT * FROM enrollments").page_size(50).into_stream();
//! while let Some(enrollment) = all.try_next().await? {
//!     println!("{}", enrollment.registration_id);
//! }
//! let states = dps.query_registration_states("floor-3", "*")?.all().await?;
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! * **One HTTPS stack.** Requests go through `azure_iot_service`'s
//!   [`Pipeline`](azure_iot_service::http::Pipeline), the one the IoT Hub service client uses:
//!   reqwest on rustls/ring, a SAS token for the audience "DPS host name" signed with the
//!   policy and cached until 85 % of its life, the core crate's retry policy, and typed errors.
//!   This crate adds DPS's paths, api-version `2021-10-01`, the ETag and bulk rules and the
//!   models. [`Error`], [`ErrorKind`], [`IfMatch`], [`Query`], [`SharedAccessPolicy`] and the
//!   options ([`ProvisioningServiceClientOptions`] = [`HttpOptions`](azure_iot_service::HttpOptions))
//!   are that crate's, re-exported: a back end using both clients handles one error type and
//!   configures trust and retries one way (docs/adr/0016-provisioning-service-client-reuses-the-service-pipeline.md).
//! * **Models** are `azure_iot_protocol::dps`'s, the same structs the emulator serves, re-exported
//!   here. Unknown members survive a get → change → update round trip; `Debug` redacts keys.
//!   What individual enrollments and groups share (status, initial twin, capabilities,
//!   allocation, reprovisioning, ETag and times) is one [`EnrollmentSettings`] in their
//!   `settings` (flattened on the wire), and the [`Enrollment`] trait treats both alike.
//! * **Errors** carry DPS's HTTP status, its six-digit `errorCode` (as
//!   [`Error::error_code`], e.g. `"404201"`), its tracking id and message; never the key or a
//!   token. 401 → [`ErrorKind::Unauthorized`], 404 → `NotFound`, 409 → `AlreadyExists`,
//!   412 → `PreconditionFailed`, 429 → `Throttled` (retried).
//! * **ETags**: [`IfMatch::Any`] sends no `If-Match` (create or overwrite);
//!   [`IfMatch::ETag`] sends it quoted. Conditional requests and creates are never repeated
//!   after DPS may have acted on them, so a retry never turns a success into a 412.
//! * **Bulk**: at most [`MAX_BULK_ITEMS`] (10) items per call, DPS's limit; more is an
//!   `InvalidArgument` error before anything is sent (no silent chunking: each call is its
//!   own unit of success). Per-item failures are in [`BulkOperationResult::errors`].
//! * **Queries** are [`Query`] streams: `x-ms-max-item-count` sets the page size,
//!   `x-ms-continuation` is followed until DPS stops sending it.
//! * **Bad input** (an id outside DPS's character set or longer than 128, an empty or
//!   oversized bulk operation) fails before anything is sent.
//! * **The emulator**: its DPS answers on the hub's HTTPS port, by default under the hub's
//!   host name (`hub.json`, `dps.hostname`). Trust its `ca.pem` and set its port;
//!   `azure-iot dps …` does both from `hub.json`. An emulator started with a DPS host name of
//!   its own that DNS does not know is reached with
//!   [`connect_address`](azure_iot_service::HttpOptions::connect_address); the host name
//!   still names the service in TLS and the token.

mod client;
mod paths;

pub use azure_iot_protocol::dps::enrollment::{
    AllocationPolicy, Attestation, AttestationType, BulkEnrollmentGroupOperation,
    BulkEnrollmentOperation, BulkMode, BulkOperationError, BulkOperationResult,
    CustomAllocationDefinition, DeviceCapabilities, Enrollment, EnrollmentGroup,
    EnrollmentSettings, IndividualEnrollment, ProvisioningStatus, QuerySpecification,
    RegistrationState, ReprovisionPolicy, SymmetricKeyAttestation, TpmAttestation, X509Attestation,
    X509CaReferences, X509CertificateWithInfo, X509Certificates,
};
pub use azure_iot_protocol::dps::registration::{RegistrationStatus, RegistrationSubstatus};
pub use azure_iot_protocol::dps::{
    API_VERSION, ErrorDetails, InitialTwin, InitialTwinProperties, X509CertificateInfo,
};
pub use azure_iot_service::{Error, ErrorKind, IfMatch, Query, Result, SharedAccessPolicy};
pub use client::{MAX_BULK_ITEMS, ProvisioningServiceClient};
pub use paths::{MAX_ID_LEN, check_id};

/// Options of a [`ProvisioningServiceClient`]: the trusted CA, HTTPS port, request timeout,
/// token lifetime and retry policy, as for the IoT Hub service client.
///
/// ```
/// use std::time::Duration;
/// use azure_iot_provisioning_service::ProvisioningServiceClientOptions;
///
/// let options = ProvisioningServiceClientOptions::default()
///     .request_timeout(Duration::from_secs(30))
///     .https_port(8443);
/// ```
pub type ProvisioningServiceClientOptions = azure_iot_service::HttpOptions;

/// Derives the symmetric key a device of a symmetric-key enrollment group registers with:
/// base64 of HMAC-SHA256 keyed with the (base64-decoded) group key over the registration id.
/// The group key itself never leaves the back end.
///
/// ```
/// let key = azure_iot_provisioning_service::derive_device_key(
///     "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=",
///     "sensor-7",
/// )?;
/// assert_eq!(key.len(), 44);
/// # Ok::<(), azure_iot_provisioning_service::Error>(())
/// ```
pub fn derive_device_key(group_key_base64: &str, registration_id: &str) -> Result<String> {
    check_id("registration id", registration_id)?;
    let key = azure_iot_core::SharedAccessKey::from_base64(group_key_base64)
        .map_err(|_| Error::invalid_argument("the enrollment group key is not valid base64"))?;
    Ok(key.derive_for_registration(registration_id).to_base64())
}
