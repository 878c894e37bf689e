//! [`ProvisioningServiceClient`]: the DPS service API over the shared HTTPS pipeline.

use azure_iot_protocol::dps::API_VERSION;
use azure_iot_protocol::dps::enrollment::{
    Attestation, BulkEnrollmentGroupOperation, BulkEnrollmentOperation, BulkOperationResult,
    EnrollmentGroup, IndividualEnrollment, RegistrationState,
};
use azure_iot_service::http::{Pipeline, Request};
use azure_iot_service::{Error, IfMatch, Query, Result, SharedAccessPolicy};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ProvisioningServiceClientOptions;
use crate::paths;

/// The most items one bulk operation may carry (DPS's limit).
pub const MAX_BULK_ITEMS: usize = 10;

/// A client of one Device Provisioning Service instance's service API.
///
/// Cheap to clone: clones share the HTTPS connection pool and the token cache. `Debug` shows
/// the host and the policy name, never the key.
///
/// ```no_run
/// # async fn run() -> Result<(), azure_iot_provisioning_service::Error> {
/// use azure_iot_provisioning_service::{
///     Attestation, IndividualEnrollment, ProvisioningServiceClient,
///     ProvisioningServiceClientOptions,
/// };
///
/// let dps = ProvisioningServiceClient::from_connection_string(
///     "HostName=mydps.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=...",
///     ProvisioningServiceClientOptions::default(),
/// )?;
/// // Empty keys: DPS generates them.
/// let enrollment = IndividualEnrollment::new("sensor-1", Attestation::symmetric_key("", ""));
/// let created = dps.create_or_update_enrollment(&enrollment, Default::default()).await?;
/// println!("etag {:?}", created.settings.etag);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ProvisioningServiceClient {
    host: String,
    pipeline: Pipeline,
}

impl ProvisioningServiceClient {
    /// A client of the DPS `host` (`mydps.azure-devices-provisioning.net`) that signs with
    /// `policy` (`provisioningserviceowner` has every permission).
    pub fn new(
        host: impl Into<String>,
        policy: SharedAccessPolicy,
        options: ProvisioningServiceClientOptions,
    ) -> Result<Self> {
        let host = host.into();
        let pipeline = Pipeline::new(&host, policy, &options, API_VERSION)?;
        Ok(Self { host, pipeline })
    }

    /// A client from a connection string with a shared access policy:
    /// `HostName=...;SharedAccessKeyName=...;SharedAccessKey=...`.
    pub fn from_connection_string(
        connection_string: &str,
        options: ProvisioningServiceClientOptions,
    ) -> Result<Self> {
        let (host, policy) = SharedAccessPolicy::parse_connection_string(connection_string)?;
        Self::new(host, policy, options)
    }

    /// The DPS host name.
    pub fn host_name(&self) -> &str {
        &self.host
    }

    // ---- individual enrollments ---------------------------------------------------------

    /// Creates `enrollment`, or replaces the one with its registration id, if `condition`
    /// holds ([`IfMatch::Any`]: unconditionally; [`IfMatch::ETag`]: only that version, else
    /// [`ErrorKind::PreconditionFailed`](crate::ErrorKind::PreconditionFailed)). The answer
    /// carries the new ETag and what DPS filled in (generated keys, defaults, timestamps).
    pub async fn create_or_update_enrollment(
        &self,
        enrollment: &IndividualEnrollment,
        condition: IfMatch,
    ) -> Result<IndividualEnrollment> {
        let path = paths::enrollment(&enrollment.registration_id)?;
        self.put(path, enrollment, &condition).await
    }

    /// The individual enrollment of `registration_id`.
    pub async fn get_enrollment(&self, registration_id: &str) -> Result<IndividualEnrollment> {
        self.get(paths::enrollment(registration_id)?).await
    }

    /// Deletes the individual enrollment of `registration_id` if `condition` holds.
    pub async fn delete_enrollment(&self, registration_id: &str, condition: IfMatch) -> Result<()> {
        self.delete(paths::enrollment(registration_id)?, &condition)
            .await
    }

    /// The attestation mechanism of an individual enrollment, keys included.
    pub async fn get_enrollment_attestation(&self, registration_id: &str) -> Result<Attestation> {
        self.attestation(paths::enrollment(registration_id)?).await
    }

    /// Creates, updates or deletes up to [`MAX_BULK_ITEMS`] individual enrollments in one
    /// call. More (or none) is an [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// error and nothing is sent; split larger sets yourself (`chunks(MAX_BULK_ITEMS)`), since
    /// each call succeeds or fails per item on its own. Items that fail are listed in the
    /// answer's `errors`; the call itself succeeds.
    pub async fn bulk_enrollments(
        &self,
        operation: &BulkEnrollmentOperation,
    ) -> Result<BulkOperationResult> {
        check_bulk("enrollments", operation.enrollments.len())?;
        for enrollment in &operation.enrollments {
            paths::check_id("registration id", &enrollment.registration_id)?;
        }
        self.bulk("/enrollments", operation).await
    }

    /// The individual enrollments `query` selects (`*` or `SELECT * FROM enrollments`), page
    /// by page.
    pub fn query_enrollments(&self, query: impl Into<String>) -> Query<IndividualEnrollment> {
        Query::new(self.pipeline.clone(), "/enrollments/query", query)
    }

    // ---- enrollment groups --------------------------------------------------------------

    /// Creates `group`, or replaces the one with its id, if `condition` holds (see
    /// [`create_or_update_enrollment`](Self::create_or_update_enrollment)).
    pub async fn create_or_update_enrollment_group(
        &self,
        group: &EnrollmentGroup,
        condition: IfMatch,
    ) -> Result<EnrollmentGroup> {
        let path = paths::group(&group.enrollment_group_id)?;
        self.put(path, group, &condition).await
    }

    /// The enrollment group `group_id`.
    pub async fn get_enrollment_group(&self, group_id: &str) -> Result<EnrollmentGroup> {
        self.get(paths::group(group_id)?).await
    }

    /// Deletes the enrollment group `group_id` if `condition` holds.
    pub async fn delete_enrollment_group(&self, group_id: &str, condition: IfMatch) -> Result<()> {
        self.delete(paths::group(group_id)?, &condition).await
    }

    /// The attestation mechanism of an enrollment group, keys included.
    pub async fn get_enrollment_group_attestation(&self, group_id: &str) -> Result<Attestation> {
        self.attestation(paths::group(group_id)?).await
    }

    /// Creates, updates or deletes up to [`MAX_BULK_ITEMS`] enrollment groups in one call
    /// (see [`bulk_enrollments`](Self::bulk_enrollments)).
    pub async fn bulk_enrollment_groups(
        &self,
        operation: &BulkEnrollmentGroupOperation,
    ) -> Result<BulkOperationResult> {
        check_bulk("enrollment groups", operation.enrollment_groups.len())?;
        for group in &operation.enrollment_groups {
            paths::check_id("enrollment group id", &group.enrollment_group_id)?;
        }
        self.bulk("/enrollmentGroups", operation).await
    }

    /// The enrollment groups `query` selects (`*` or `SELECT * FROM enrollmentGroups`), page
    /// by page.
    pub fn query_enrollment_groups(&self, query: impl Into<String>) -> Query<EnrollmentGroup> {
        Query::new(self.pipeline.clone(), "/enrollmentGroups/query", query)
    }

    // ---- registration states ------------------------------------------------------------

    /// The registration state of the device `registration_id` (there is one once it tried to
    /// register).
    pub async fn get_registration_state(&self, registration_id: &str) -> Result<RegistrationState> {
        self.get(paths::registration(registration_id, "registration id")?)
            .await
    }

    /// Deletes the registration state of `registration_id` if `condition` holds; the device
    /// registers afresh next time. The hub identity stays.
    pub async fn delete_registration_state(
        &self,
        registration_id: &str,
        condition: IfMatch,
    ) -> Result<()> {
        let path = paths::registration(registration_id, "registration id")?;
        self.delete(path, &condition).await
    }

    /// The registration states of the devices of enrollment group `group_id`, page by page
    /// (`query`: `*`). An invalid group id fails here, before anything is sent.
    pub fn query_registration_states(
        &self,
        group_id: &str,
        query: impl Into<String>,
    ) -> Result<Query<RegistrationState>> {
        let path = paths::registration(group_id, "enrollment group id")?;
        Ok(Query::new(
            self.pipeline.clone(),
            format!("{path}/query"),
            query,
        ))
    }

    // ---- the requests ---------------------------------------------------------------------

    async fn get<T: DeserializeOwned>(&self, path: String) -> Result<T> {
        self.pipeline
            .send(Request::new(Method::GET, path))
            .await?
            .json()
    }

    async fn put<T: Serialize + DeserializeOwned>(
        &self,
        path: String,
        body: &T,
        condition: &IfMatch,
    ) -> Result<T> {
        let request = conditional(Request::new(Method::PUT, path).json(body)?, condition);
        self.pipeline.send(request).await?.json()
    }

    async fn delete(&self, path: String, condition: &IfMatch) -> Result<()> {
        let request = conditional(Request::new(Method::DELETE, path), condition);
        self.pipeline.send(request).await.map(drop)
    }

    async fn attestation(&self, entity_path: String) -> Result<Attestation> {
        // Reading the keys changes nothing: safe to repeat although it is a POST.
        let request = Request::new(Method::POST, format!("{entity_path}/attestationmechanism"))
            .idempotent(true);
        self.pipeline.send(request).await?.json()
    }

    async fn bulk(&self, path: &str, operation: &impl Serialize) -> Result<BulkOperationResult> {
        // A POST: repeated only if DPS never saw it or answered 429.
        let request = Request::new(Method::POST, path).json(operation)?;
        self.pipeline.send(request).await?.json()
    }
}

/// `request` with the `If-Match` header of `condition`: none for [`IfMatch::Any`] (DPS
/// creates or overwrites; `If-Match: *` on a create is not what Node, C# or C send), the
/// quoted ETag otherwise. A conditional request is not repeated once DPS may have acted on it:
/// the repeat would fail with 412 (or 404) although the first one succeeded.
fn conditional(request: Request, condition: &IfMatch) -> Request {
    match condition {
        IfMatch::Any => request,
        IfMatch::ETag(_) => request.if_match(condition).idempotent(false),
    }
}

fn check_bulk(what: &str, count: usize) -> Result<()> {
    if count == 0 {
        return Err(Error::invalid_argument(format!(
            "a bulk operation needs at least one of its {what}"
        )));
    }
    if count > MAX_BULK_ITEMS {
        return Err(Error::invalid_argument(format!(
            "a bulk operation takes at most {MAX_BULK_ITEMS} {what}, not {count}; split them into calls of {MAX_BULK_ITEMS}"
        )));
    }
    Ok(())
}
