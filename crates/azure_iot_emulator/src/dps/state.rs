//! The DPS actor's state: enrollments, enrollment groups and registration records, owned by
//! one thread (ADR 9, following ADR 4 inside it: store first, then memory).
//!
//! This module holds the service API's rules (create, update with ETags, delete, bulk, query);
//! `attestation` and `flow` hold the device side.

use std::collections::BTreeMap;

use azure_iot_core::sas::SharedAccessKey;
use azure_iot_protocol::dps::X509CertificateInfo;
use azure_iot_protocol::dps::enrollment::{
    Attestation, AttestationType, BulkMode, BulkOperationError, BulkOperationResult,
    EnrollmentGroup, IndividualEnrollment, SymmetricKeyAttestation, X509CertificateWithInfo,
    X509Certificates,
};
use base64::Engine as _;
use serde_json::Value;

use super::DpsError;
use super::records::{Enrollment, RegistrationRecord, code};
use super::store::{Change, DpsStore, Table};
use crate::error::EmulatorError;
use crate::hub::state::now;

/// The most items one bulk call may carry (DPS's limit).
pub(crate) const MAX_BULK_ITEMS: usize = 10;

/// Everything the DPS knows.
pub(crate) struct DpsState {
    store: DpsStore,
    /// Individual enrollments by lower-cased registration id.
    pub(super) enrollments: BTreeMap<String, IndividualEnrollment>,
    /// Enrollment groups by lower-cased group id.
    pub(super) groups: BTreeMap<String, EnrollmentGroup>,
    /// Registration records by lower-cased registration id.
    pub(super) registrations: BTreeMap<String, RegistrationRecord>,
    /// Registered CA certificates (`certificates`).
    pub(super) certificates: super::certificates::DpsCertificates,
    /// TPM registrations' last challenge keys by lower-cased registration id (`tpm::session`).
    pub(super) tpm_sessions: BTreeMap<String, super::tpm::session::TpmSession>,
    /// Source of ETags: strictly increasing, seeded from the clock so values stay unique
    /// across restarts.
    sequence: u64,
}

/// Where an enrollment or group lives in the state.
pub(crate) trait Stored: Enrollment {
    /// Its map.
    fn map(state: &DpsState) -> &BTreeMap<String, Self>;
    /// Its map.
    fn map_mut(state: &mut DpsState) -> &mut BTreeMap<String, Self>;
    /// Checks the attestation a body carries for this kind.
    fn check_kind(attestation: &Attestation) -> Result<(), DpsError>;
    /// Adds the registration state to a read (individual enrollments only).
    fn attach(&mut self, _record: Option<&RegistrationRecord>) {}
}

impl Stored for IndividualEnrollment {
    fn attach(&mut self, record: Option<&RegistrationRecord>) {
        self.registration_state = record.map(|r| r.state.clone());
    }
    fn map(state: &DpsState) -> &BTreeMap<String, Self> {
        &state.enrollments
    }
    fn map_mut(state: &mut DpsState) -> &mut BTreeMap<String, Self> {
        &mut state.enrollments
    }
    fn check_kind(attestation: &Attestation) -> Result<(), DpsError> {
        if attestation.kind == AttestationType::X509
            && attestation
                .x509
                .as_ref()
                .and_then(|x| x.client_certificates.as_ref())
                .is_none()
        {
            return Err(DpsError::invalid(
                "an individual enrollment's X.509 attestation needs clientCertificates",
            ));
        }
        Ok(())
    }
}

impl Stored for EnrollmentGroup {
    fn map(state: &DpsState) -> &BTreeMap<String, Self> {
        &state.groups
    }
    fn map_mut(state: &mut DpsState) -> &mut BTreeMap<String, Self> {
        &mut state.groups
    }
    fn check_kind(attestation: &Attestation) -> Result<(), DpsError> {
        match attestation.kind {
            AttestationType::SymmetricKey => Ok(()),
            AttestationType::X509 => {
                let x509 = attestation.x509.as_ref();
                if x509.and_then(|x| x.signing_certificates.as_ref()).is_some()
                    || x509.and_then(|x| x.ca_references.as_ref()).is_some()
                {
                    Ok(())
                } else {
                    Err(DpsError::invalid(
                        "an enrollment group's X.509 attestation needs signingCertificates or caReferences",
                    ))
                }
            }
            other => Err(DpsError::invalid(format!(
                "an enrollment group cannot use {other:?} attestation (symmetricKey or x509)"
            ))),
        }
    }
}

impl DpsState {
    /// Loads every record from `store`.
    pub(crate) fn load(store: DpsStore) -> Result<Self, EmulatorError> {
        let key = |id: &str| id.to_ascii_lowercase();
        let enrollments = store
            .rows::<IndividualEnrollment>(Table::Enrollments)?
            .into_iter()
            .map(|e| (key(&e.registration_id), e))
            .collect();
        let groups = store
            .rows::<EnrollmentGroup>(Table::Groups)?
            .into_iter()
            .map(|g| (key(&g.enrollment_group_id), g))
            .collect();
        let registrations = store
            .rows::<RegistrationRecord>(Table::Registrations)?
            .into_iter()
            .map(|r| (key(&r.state.registration_id), r))
            .collect();
        let certificates = super::certificates::load(&store)?;
        let tpm_sessions = super::tpm::session::load(&store)?;
        Ok(Self {
            store,
            enrollments,
            groups,
            registrations,
            certificates,
            tpm_sessions,
            sequence: 0,
        })
    }

    /// The database, for the state's other modules (`certificates`).
    pub(super) fn store_mut(&mut self) -> &mut DpsStore {
        &mut self.store
    }

    /// A new ETag (base64 of a strictly increasing number, the shape the hub uses).
    pub(super) fn next_etag(&mut self) -> String {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.sequence = (self.sequence + 1).max(clock);
        base64::engine::general_purpose::STANDARD.encode(self.sequence.to_string())
    }

    /// `GET /enrollments/{id}` or `/enrollmentGroups/{id}`.
    pub(crate) fn get<E: Stored>(&self, id: &str) -> Result<E, DpsError> {
        let mut found = E::map(self)
            .get(&id.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| not_found::<E>(id))?;
        self.attach_state(&mut found);
        Ok(found)
    }

    /// The registration state of an individual enrollment goes with it on reads.
    fn attach_state<E: Stored>(&self, item: &mut E) {
        let record = self
            .registrations
            .get(&item.id().to_ascii_lowercase())
            .filter(|r| r.enrollment_group_id.is_none());
        item.attach(record);
    }

    /// `PUT /enrollments/{id}` or `/enrollmentGroups/{id}`: create, or replace (`If-Match`,
    /// when given, must name the current version: 412 otherwise; given for one that does not
    /// exist: 404). Symmetric keys left empty are generated; certificates are checked and
    /// described. Answers the stored item.
    pub(crate) fn put<E: Stored>(
        &mut self,
        id: &str,
        mut item: E,
        if_match: Option<&str>,
    ) -> Result<E, DpsError> {
        self.prepare(id, &mut item, if_match, None)?;
        self.store.apply(&[item.change()])?;
        E::map_mut(self).insert(id.to_ascii_lowercase(), item.clone());
        Ok(item)
    }

    /// Validates `item` for a write under `id` and stamps it (ETag, times). `expect_existing`:
    /// `Some(false)` refuses an existing one (bulk create), `None` creates or replaces.
    fn prepare<E: Stored>(
        &mut self,
        id: &str,
        item: &mut E,
        if_match: Option<&str>,
        expect_existing: Option<bool>,
    ) -> Result<(), DpsError> {
        validate_id(E::KIND, id)?;
        if !item.id().is_empty() && !item.id().eq_ignore_ascii_case(id) {
            return Err(DpsError::invalid(format!(
                "the {} id `{}` in the body does not match `{id}` in the path",
                E::KIND,
                item.id()
            )));
        }
        E::check_kind(item.attestation())?;
        self.check_ca_references(item.attestation())?;
        prepare_attestation(item.attestation_mut())?;
        let existing = E::map(self).get(&id.to_ascii_lowercase()).cloned();
        let created = match (existing, if_match) {
            (Some(_), _) if expect_existing == Some(false) => {
                return Err(DpsError::new(
                    code::CONFLICT,
                    format!("the {} `{id}` already exists", E::KIND),
                ));
            }
            (Some(current), Some(tag)) => {
                check_if_match::<E>(tag, current.settings().etag.as_deref())?;
                current.settings().created_date_time_utc.clone()
            }
            (Some(current), None) => current.settings().created_date_time_utc.clone(),
            (None, Some(tag)) if tag.trim().trim_matches('"') != "*" => {
                return Err(not_found::<E>(id));
            }
            (None, _) => None,
        };
        let now = now();
        let etag = self.next_etag();
        let stamps = item.settings_mut();
        stamps.etag = Some(etag);
        stamps.created_date_time_utc = Some(created.unwrap_or_else(|| now.clone()));
        stamps.last_updated_date_time_utc = Some(now);
        Ok(())
    }

    /// `DELETE /enrollments/{id}` or `/enrollmentGroups/{id}`: 404 if missing, 412 if
    /// `If-Match` names another version. Deleting an individual enrollment deletes its
    /// registration record too; the hub's device stays.
    pub(crate) fn delete<E: Stored>(
        &mut self,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), DpsError> {
        let key = id.to_ascii_lowercase();
        let current = E::map(self).get(&key).ok_or_else(|| not_found::<E>(id))?;
        if let Some(tag) = if_match {
            check_if_match::<E>(tag, current.settings().etag.as_deref())?;
        }
        let drop_record = E::TABLE == Table::Enrollments
            && self
                .registrations
                .get(&key)
                .is_some_and(|r| r.enrollment_group_id.is_none());
        let mut changes = vec![Change::Delete(E::TABLE, id)];
        if drop_record {
            changes.push(Change::Delete(Table::Registrations, id));
        }
        self.store.apply(&changes)?;
        E::map_mut(self).remove(&key);
        if drop_record {
            self.registrations.remove(&key);
        }
        Ok(())
    }

    /// `POST /enrollments` or `/enrollmentGroups` (bulk): at most [`MAX_BULK_ITEMS`]. Every item
    /// is checked first; if any fails, nothing is written and the answer lists the failures
    /// (`isSuccessful: false`); otherwise all are written in one transaction.
    pub(crate) fn bulk<E: Stored>(
        &mut self,
        mode: BulkMode,
        items: Vec<E>,
        error_for: impl Fn(&E, &DpsError) -> BulkOperationError,
    ) -> Result<BulkOperationResult, DpsError> {
        if items.is_empty() || items.len() > MAX_BULK_ITEMS {
            return Err(DpsError::invalid(format!(
                "a bulk operation carries 1 to {MAX_BULK_ITEMS} items, not {}",
                items.len()
            )));
        }
        let mut errors = Vec::new();
        let mut prepared = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for mut item in items {
            let id = item.id().to_owned();
            let outcome = if !seen.insert(id.to_ascii_lowercase()) {
                Err(DpsError::invalid(format!(
                    "`{id}` appears twice in the bulk operation"
                )))
            } else {
                match mode {
                    BulkMode::Delete => match E::map(self).get(&id.to_ascii_lowercase()) {
                        None => Err(not_found::<E>(&id)),
                        Some(current) => match &item.settings().etag {
                            Some(tag) => {
                                check_if_match::<E>(tag, current.settings().etag.as_deref())
                            }
                            None => Ok(()),
                        },
                    },
                    BulkMode::Create => self.prepare(&id, &mut item, None, Some(false)),
                    BulkMode::Update => self.prepare(&id, &mut item, None, None),
                    BulkMode::UpdateIfMatchEtag => {
                        let tag = item.settings().etag.clone().unwrap_or_default();
                        self.prepare(&id, &mut item, Some(&tag), None)
                    }
                }
            };
            match outcome {
                Ok(()) => prepared.push(item),
                Err(e) => errors.push(error_for(&item, &e)),
            }
        }
        if !errors.is_empty() {
            return Ok(BulkOperationResult {
                is_successful: false,
                errors,
            });
        }
        let changes: Vec<Change<'_>> = prepared
            .iter()
            .map(|item| {
                if mode == BulkMode::Delete {
                    Change::Delete(E::TABLE, item.id())
                } else {
                    item.change()
                }
            })
            .collect();
        self.store.apply(&changes)?;
        for item in prepared {
            let key = item.id().to_ascii_lowercase();
            if mode == BulkMode::Delete {
                E::map_mut(self).remove(&key);
            } else {
                E::map_mut(self).insert(key, item);
            }
        }
        Ok(BulkOperationResult {
            is_successful: true,
            errors: Vec::new(),
        })
    }

    /// Every enrollment or group as JSON, in id order, for a query.
    pub(crate) fn documents<E: Stored>(&self) -> Vec<Value> {
        E::map(self)
            .values()
            .filter_map(|item| {
                let mut item = item.clone();
                self.attach_state(&mut item);
                serde_json::to_value(item).ok()
            })
            .collect()
    }

    /// Registration states of the devices that registered through group `group_id`, as JSON,
    /// in registration id order.
    pub(crate) fn group_registrations(&self, group_id: &str) -> Vec<Value> {
        self.registrations
            .values()
            .filter(|r| {
                r.enrollment_group_id
                    .as_deref()
                    .is_some_and(|g| g.eq_ignore_ascii_case(group_id))
            })
            .filter_map(|r| serde_json::to_value(&r.state).ok())
            .collect()
    }

    /// `GET /registrations/{id}`: the registration state.
    pub(crate) fn registration(&self, id: &str) -> Result<RegistrationRecord, DpsError> {
        self.registrations
            .get(&id.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| {
                DpsError::new(
                    code::REGISTRATION_NOT_FOUND,
                    format!("there is no registration `{id}`"),
                )
            })
    }

    /// `DELETE /registrations/{id}`: 404 if missing, 412 on a stale `If-Match`. The hub's
    /// device stays (as with DPS).
    pub(crate) fn delete_registration(
        &mut self,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), DpsError> {
        let record = self.registration(id)?;
        if let Some(tag) = if_match {
            check_if_match::<IndividualEnrollment>(tag, record.state.etag.as_deref())?;
        }
        self.store
            .apply(&[Change::Delete(Table::Registrations, id)])?;
        self.registrations.remove(&id.to_ascii_lowercase());
        Ok(())
    }

    /// Stores a TPM challenge's keys, replacing the registration's earlier ones.
    pub(crate) fn save_tpm_session(
        &mut self,
        session: super::tpm::session::TpmSession,
    ) -> Result<(), DpsError> {
        self.store.apply(&[Change::PutTpmSession(&session)])?;
        self.tpm_sessions
            .insert(session.registration_id.to_ascii_lowercase(), session);
        Ok(())
    }

    /// Writes a registration record (store first, then memory) and returns it.
    pub(crate) fn save_registration(
        &mut self,
        mut record: RegistrationRecord,
    ) -> Result<RegistrationRecord, DpsError> {
        let key = record.state.registration_id.to_ascii_lowercase();
        let now = now();
        record.state.created_date_time_utc = self
            .registrations
            .get(&key)
            .and_then(|r| r.state.created_date_time_utc.clone())
            .or_else(|| Some(now.clone()));
        record.state.last_updated_date_time_utc = Some(now);
        record.state.etag = Some(self.next_etag());
        self.store.apply(&[Change::PutRegistration(&record)])?;
        self.registrations.insert(key, record.clone());
        Ok(record)
    }
}

/// 404 for `E` `id`.
pub(crate) fn not_found<E: Enrollment>(id: &str) -> DpsError {
    DpsError::new(E::NOT_FOUND, format!("there is no {} `{id}`", E::KIND))
}

/// `If-Match` against the current ETag, quotes ignored; `*` matches anything.
fn check_if_match<E: Enrollment>(if_match: &str, current: Option<&str>) -> Result<(), DpsError> {
    let wanted = if_match.trim().trim_matches('"');
    if wanted == "*" || current.is_some_and(|c| c.trim_matches('"') == wanted) {
        Ok(())
    } else {
        Err(DpsError::new(
            code::PRECONDITION_FAILED,
            format!(
                "the {} has changed: the ETag in If-Match is not its current one",
                E::KIND
            ),
        ))
    }
}

/// DPS ids: 1 to 128 characters, alphanumerics and `- . _ :`, not starting or ending with one
/// of those.
pub(crate) fn validate_id(kind: &str, id: &str) -> Result<(), DpsError> {
    let special = |c: char| matches!(c, '-' | '.' | '_' | ':');
    let valid = !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || special(c))
        && !id.starts_with(special)
        && !id.ends_with(special);
    if valid {
        Ok(())
    } else {
        Err(DpsError::invalid(format!(
            "`{id}` is not a valid {kind} id: 1 to 128 letters, digits and - . _ : (not first or last)"
        )))
    }
}

/// Checks an attestation and fills what the service fills: generated symmetric keys, and
/// the `info` of every certificate. The type must match the member that is set.
fn prepare_attestation(attestation: &mut Attestation) -> Result<(), DpsError> {
    match attestation.kind {
        AttestationType::SymmetricKey => {
            let keys = attestation
                .symmetric_key
                .get_or_insert_with(|| SymmetricKeyAttestation {
                    primary_key: String::new(),
                    secondary_key: String::new(),
                });
            for key in [&mut keys.primary_key, &mut keys.secondary_key] {
                if key.is_empty() {
                    *key = SharedAccessKey::generate()
                        .map_err(DpsError::internal)?
                        .to_base64();
                } else {
                    SharedAccessKey::from_base64(key).map_err(|_| {
                        DpsError::invalid("a symmetric key of the attestation is not valid base64")
                    })?;
                }
            }
            Ok(())
        }
        AttestationType::X509 => {
            let x509 = attestation
                .x509
                .as_mut()
                .ok_or_else(|| DpsError::invalid("an x509 attestation needs its `x509` member"))?;
            for set in [
                &mut x509.client_certificates,
                &mut x509.signing_certificates,
            ]
            .into_iter()
            .flatten()
            {
                describe_certificates(set)?;
            }
            Ok(())
        }
        AttestationType::Tpm => {
            if attestation
                .tpm
                .as_ref()
                .is_some_and(|t| !t.endorsement_key.is_empty())
            {
                Ok(())
            } else {
                Err(DpsError::invalid(
                    "a tpm attestation needs an endorsementKey",
                ))
            }
        }
        AttestationType::None => Err(DpsError::invalid(
            "the attestation type must be symmetricKey, x509 or tpm",
        )),
    }
}

/// Parses the certificates of a primary/secondary pair and fills their `info`.
fn describe_certificates(set: &mut X509Certificates) -> Result<(), DpsError> {
    let mut any = false;
    for slot in [&mut set.primary, &mut set.secondary].into_iter().flatten() {
        describe_certificate(slot)?;
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err(DpsError::invalid(
            "an X.509 attestation names no certificate",
        ))
    }
}

fn describe_certificate(slot: &mut X509CertificateWithInfo) -> Result<(), DpsError> {
    let text = slot
        .certificate
        .as_deref()
        .ok_or_else(|| DpsError::invalid("an X.509 certificate entry has no `certificate`"))?;
    let der = crate::hub::certificates::parse_certificate(text)
        .map_err(|e| DpsError::invalid(e.message))?;
    slot.info = Some(certificate_info(&der));
    Ok(())
}

/// What DPS reports about a certificate.
pub(crate) fn certificate_info(der: &[u8]) -> X509CertificateInfo {
    let (sha1, sha256) = crate::tls::thumbprints(der);
    let mut info = X509CertificateInfo {
        sha1_thumbprint: sha1,
        sha256_thumbprint: sha256,
        ..X509CertificateInfo::default()
    };
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
        let time = |t: x509_parser::time::ASN1Time| {
            azure_iot_core::datetime::format_timestamp(t.to_datetime())
        };
        info.subject_name = cert.subject().to_string();
        info.issuer_name = cert.issuer().to_string();
        info.not_before_utc = Some(time(cert.validity().not_before));
        info.not_after_utc = Some(time(cert.validity().not_after));
        info.serial_number = cert
            .raw_serial_as_string()
            .replace(':', "")
            .to_ascii_uppercase();
        info.version = i64::from(cert.version().0) + 1;
    }
    info
}
