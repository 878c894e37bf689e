//! The hub's state and every operation on it.
//!
//! [`HubState`] is owned by one thread (see [`super::Hub`]); operations run one at a time, so
//! each sees and leaves a consistent registry. Every mutation is validated completely, written
//! to the store in one transaction, and only then applied in memory: a request that fails
//! changes nothing, and a crash after the commit loses nothing.
//!
//! The order is the invariant of ADR 4 and every mutating method here keeps it:
//!
//! 1. validate everything (ids, body, `If-Match`, limits) on a *copy* of the record;
//! 2. `Store::apply` the resulting changes in one SQLite transaction;
//! 3. install the copy in memory (`install` / `install_identity` / `forget`);
//! 4. only then push side effects to live connections (desired patches, disconnects) and
//!    return the answer.
//!
//! A failure at step 1 or 2 returns before memory is touched; nothing can fail after step 2.
//! Reads, queries included, are served from memory and never touch SQLite.
//!
//! Identities are kept in a `BTreeMap` by device id, each with its modules in another one, so
//! listings and query results come out in (device id, module id) order: the stable order query
//! continuation tokens rely on. Runtime-only facts (connection state, last activity, C2D queue
//! depth) are not stored in the record; they are merged into the JSON when it is rendered.

use std::collections::BTreeMap;
use std::time::SystemTime;

use azure_iot_core::datetime::format_timestamp;
use azure_iot_core::sas::SharedAccessKey;
use azure_iot_protocol::Identity;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::c2d::CloudToDevice;
use super::devices::{Links, MethodTarget};
use super::error::{ErrorCode, HubError};
use super::faults::Faults;
use super::identity::{IdentityBody, IdentityRecord, IdentitySpec, NEVER, Status, validate_id};
use super::policy::{DEFAULT_POLICIES, Policies, Policy};
use super::twin::TwinState;
use crate::error::EmulatorError;
use crate::store::{Change, Store};
use crate::telemetry::MessageSource;

/// The most entries one bulk registry call may carry.
pub(crate) const MAX_BULK_ENTRIES: usize = 100;

/// The current time in the hub's timestamp format (ISO 8601 UTC with seven fractional digits,
/// as the hub writes `$lastUpdated` and `statusUpdatedTime`).
pub(crate) fn now() -> String {
    format_timestamp(OffsetDateTime::now_utc())
}

/// A device and its modules. Deleting the device drops the entry, and with it the modules, as
/// the hub deletes a device's modules with it.
struct DeviceEntry {
    /// The device identity and its twin.
    record: IdentityRecord,
    /// Module identities by module id.
    modules: BTreeMap<String, IdentityRecord>,
}

/// Everything the hub knows.
pub(crate) struct HubState {
    /// The durable copy; written before memory on every mutation.
    pub(super) store: Store,
    /// Shared access policies (fixed after start; the HTTPS front-end holds a clone).
    policies: Policies,
    /// The identity registry with twins, by device id.
    devices: BTreeMap<String, DeviceEntry>,
    /// Source of identity ETags and generation ids: strictly increasing, seeded from the clock
    /// so that values stay unique across restarts without a write per use.
    sequence: u64,
    /// Live device connections, method routing, persistent sessions (see `devices.rs`).
    pub(super) links: Links,
    /// Cloud-to-device queues and feedback (see `c2d.rs`).
    pub(super) c2d: CloudToDevice,
    /// File uploads in progress and their notifications (see `files.rs`).
    pub(super) files: super::files::FileUploads,
    /// Injected faults (see `faults.rs`).
    pub(super) faults: Faults,
    /// Registered CA certificates (see `certificates.rs`).
    pub(super) certificates: super::certificates::Certificates,
    /// Jobs v2 and their device rows (see `jobs.rs`).
    pub(super) jobs: super::jobs::Jobs,
    /// Configurations and what they did to each twin (see `configurations.rs`).
    pub(super) configurations: super::configurations::Configurations,
    /// Import/export jobs (see `exportimport.rs`).
    pub(super) export_jobs: super::exportimport::ExportImportJobs,
    /// Where the hub's own notifications go (see `routed.rs`).
    pub(super) routed: super::routed::Router,
}

impl HubState {
    /// Follows the service grant generation (see `Fault::ExpireServiceTokens`).
    pub(crate) fn grant_generation(&self) -> tokio::sync::watch::Receiver<u64> {
        self.faults.grant_generation()
    }

    /// Loads the state from `store`, creating the default policies on first start.
    ///
    /// A module row without its device row means the database was edited or corrupted; the
    /// start is refused rather than serving a registry the hub could never have had. C2D
    /// queues, feedback and CA certificates are loaded by their own modules from the same
    /// store.
    pub(crate) fn load(store: Store) -> Result<Self, EmulatorError> {
        let mut policies = store.policies()?;
        if policies.is_empty() {
            for (name, rights) in DEFAULT_POLICIES {
                let key = || {
                    SharedAccessKey::generate()
                        .map_err(|e| EmulatorError::Config(format!("generating keys: {e}")))
                };
                let policy = Policy {
                    name: name.to_owned(),
                    primary: key()?,
                    secondary: key()?,
                    rights,
                };
                store.insert_policy(&policy)?;
                policies.push(policy);
            }
        }
        let mut devices: BTreeMap<String, DeviceEntry> = BTreeMap::new();
        let mut orphans = Vec::new();
        for record in store.identities()? {
            match record.module_id.clone() {
                None => {
                    devices.insert(
                        record.device_id.clone(),
                        DeviceEntry {
                            record,
                            modules: BTreeMap::new(),
                        },
                    );
                }
                Some(module) => match devices.get_mut(&record.device_id) {
                    Some(entry) => {
                        entry.modules.insert(module, record);
                    }
                    None => orphans.push(record),
                },
            }
        }
        if let Some(orphan) = orphans.first() {
            return Err(EmulatorError::Storage(format!(
                "module `{}` of device `{}` has no device record",
                orphan.module_id.as_deref().unwrap_or_default(),
                orphan.device_id
            )));
        }
        let clock = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let c2d = CloudToDevice::load(&store)?;
        let certificates = super::certificates::load(&store)?;
        let files = super::files::FileUploads::load(&store)?;
        let jobs = super::jobs::Jobs::load(&store)?;
        let configurations = super::configurations::Configurations::load(&store)?;
        let mut state = Self {
            jobs,
            c2d,
            files,
            faults: Faults::default(),
            certificates,
            store,
            policies: Policies::new(policies),
            devices,
            sequence: clock,
            links: Links::default(),
            configurations,
            export_jobs: Default::default(),
            routed: Default::default(),
        };
        state.adopt_configurations();
        Ok(state)
    }

    /// The hub's shared access policies.
    pub(crate) fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The next sequence value: one more than the last, or the clock in microseconds if that
    /// is larger. Never repeats within a run, and a restart starts past every earlier value
    /// unless the clock went backwards by more than the values used.
    pub(super) fn next_sequence(&mut self) -> u64 {
        let clock = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.sequence = (self.sequence + 1).max(clock);
        self.sequence
    }

    /// A new identity ETag: base64 of a decimal number, the shape the hub uses.
    pub(super) fn next_etag(&mut self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.next_sequence().to_string())
    }

    /// Whether the identity has a live device connection (`connectionState: Connected`).
    fn is_connected(&self, device_id: &str, module_id: Option<&str>) -> bool {
        let identity = match module_id {
            Some(m) => Identity::module(device_id, m),
            None => Identity::device(device_id),
        };
        self.links.is_connected(&identity)
    }

    /// The stored record of a device or module: 404 `DeviceNotFound` if the device is
    /// unknown, 404 `ModuleNotFound` if only the module is.
    pub(super) fn record(
        &self,
        device_id: &str,
        module_id: Option<&str>,
    ) -> Result<&IdentityRecord, HubError> {
        let entry = self
            .devices
            .get(device_id)
            .ok_or_else(|| HubError::device_not_found(device_id))?;
        match module_id {
            None => Ok(&entry.record),
            Some(m) => entry
                .modules
                .get(m)
                .ok_or_else(|| HubError::module_not_found(device_id, m)),
        }
    }

    /// The registry JSON of an identity with its live facts: connection state, pending C2D
    /// count (devices only; modules have no C2D queue of their own) and activity times.
    fn identity_json(&self, record: &IdentityRecord) -> Value {
        let connected = self.is_connected(&record.device_id, record.module_id.as_deref());
        let queued = if record.module_id.is_none() {
            self.c2d_count(&record.device_id)
        } else {
            0
        };
        let mut json = record.to_json(connected, queued);
        self.stamp_activity(record, &mut json);
        json
    }

    /// Fills `connectionStateUpdatedTime` and `lastActivityTime` from live state: they are
    /// kept in memory (like the connection state), not written per message.
    fn stamp_activity(&self, record: &IdentityRecord, json: &mut Value) {
        let identity = match record.module_id.as_deref() {
            Some(m) => Identity::module(&record.device_id, m),
            None => Identity::device(&record.device_id),
        };
        let (Some(activity), Some(map)) = (self.links.activity(&identity), json.as_object_mut())
        else {
            return;
        };
        if let Some(at) = &activity.state_changed
            && map.contains_key("connectionStateUpdatedTime")
        {
            map.insert(
                "connectionStateUpdatedTime".into(),
                Value::String(at.clone()),
            );
        }
        if let Some(at) = &activity.last {
            map.insert("lastActivityTime".into(), Value::String(at.clone()));
        }
    }

    // ---- identities ---------------------------------------------------------------------

    /// `GET /devices/{id}[/modules/{mid}]`: the identity as the registry shows it, with its
    /// authentication (keys included) and live connection facts.
    pub(crate) fn get_identity(
        &self,
        device_id: &str,
        module_id: Option<&str>,
    ) -> Result<Value, HubError> {
        Ok(self.identity_json(self.record(device_id, module_id)?))
    }

    /// `GET /devices?top=n`: devices in id order, at most `top` (the handler caps it at the
    /// hub's 1000). Modules are not listed here; they have their own listing per device.
    pub(crate) fn list_devices(&self, top: usize) -> Vec<Value> {
        self.devices
            .values()
            .take(top)
            .map(|e| self.identity_json(&e.record))
            .collect()
    }

    /// `GET /devices/{id}/modules`: every module of the device, in id order; 404
    /// `DeviceNotFound` for an unknown device (an empty list would hide a typo).
    pub(crate) fn list_modules(&self, device_id: &str) -> Result<Vec<Value>, HubError> {
        let entry = self
            .devices
            .get(device_id)
            .ok_or_else(|| HubError::device_not_found(device_id))?;
        Ok(entry
            .modules
            .values()
            .map(|r| self.identity_json(r))
            .collect())
    }

    /// `PUT /devices/{id}[/modules/{mid}]`: create (no If-Match) or update (If-Match).
    ///
    /// Always answers the full identity, generated keys included (SDK users read them from
    /// the create response), and the caller answers 200 even for a create: the Python SDK
    /// accepts only 200 here. A module PUT on an unknown device is 404 `DeviceNotFound`, never
    /// an implicit device create.
    pub(crate) fn put_identity(
        &mut self,
        device_id: &str,
        module_id: Option<&str>,
        body: IdentityBody,
        if_match: Option<&str>,
    ) -> Result<Value, HubError> {
        validate_id("device", device_id)?;
        if let Some(m) = module_id {
            validate_id("module", m)?;
        }
        let spec = body.validate(device_id, module_id)?;
        let record = self.prepare_put(device_id, module_id, spec, if_match)?;
        self.store.apply(&[Change::Put(&record)])?;
        let json = self.identity_json(&record);
        self.install_identity(record);
        self.reconcile_twin(device_id, module_id);
        Ok(json)
    }

    /// Builds the record a PUT would store, applying the create/update and ETag rules of the
    /// service API:
    ///
    /// * existing identity, no `If-Match`: 409 `DeviceAlreadyExists` / `ModuleAlreadyExists`
    ///   (a create must not overwrite; Python and Node send no `If-Match` on create);
    /// * existing identity, `If-Match`: `*` or the current ETag updates, anything else is 412;
    /// * missing identity, `If-Match` other than `*`: 404, since there is nothing to match;
    /// * missing identity otherwise: a create.
    fn prepare_put(
        &mut self,
        device_id: &str,
        module_id: Option<&str>,
        spec: IdentitySpec,
        if_match: Option<&str>,
    ) -> Result<IdentityRecord, HubError> {
        let existing = match self.record(device_id, module_id) {
            Ok(r) => Some(r.clone()),
            Err(e) if module_id.is_some() && e.code == ErrorCode::DeviceNotFound => return Err(e),
            Err(_) => None,
        };
        match existing {
            Some(mut record) => {
                match if_match {
                    Some(tag) => check_if_match(tag, &record.etag)?,
                    None => {
                        return Err(match module_id {
                            Some(m) => HubError::new(
                                ErrorCode::ModuleAlreadyExists,
                                format!("Module {m} on device {device_id} already exists"),
                            ),
                            None => HubError::new(
                                ErrorCode::DeviceAlreadyExists,
                                format!("Device {device_id} already exists"),
                            ),
                        });
                    }
                }
                self.update_record(&mut record, spec)?;
                Ok(record)
            }
            None => {
                if if_match.is_some_and(|t| t.trim().trim_matches('"') != "*") {
                    return Err(match module_id {
                        Some(m) => HubError::module_not_found(device_id, m),
                        None => HubError::device_not_found(device_id),
                    });
                }
                self.new_record(device_id, module_id, spec)
            }
        }
    }

    /// Applies an update to an existing identity: keys the update leaves out are kept, the
    /// status time moves only if the status changes, and the ETag always changes.
    pub(super) fn update_record(
        &mut self,
        record: &mut IdentityRecord,
        mut spec: IdentitySpec,
    ) -> Result<(), HubError> {
        spec.credentials
            .fill_missing_keys(Some(&record.credentials))?;
        if record.status != spec.status {
            record.status_updated_time = now();
        }
        record.status = spec.status;
        record.status_reason = spec.status_reason;
        record.credentials = spec.credentials;
        record.iot_edge = spec.iot_edge;
        record.device_scope = spec.device_scope;
        record.parent_scopes = spec.parent_scopes;
        record.managed_by = spec.managed_by;
        record.etag = self.next_etag();
        Ok(())
    }

    /// A new identity with a fresh generation id, ETag and twin.
    pub(super) fn new_record(
        &mut self,
        device_id: &str,
        module_id: Option<&str>,
        mut spec: IdentitySpec,
    ) -> Result<IdentityRecord, HubError> {
        spec.credentials.fill_missing_keys(None)?;
        Ok(IdentityRecord {
            device_id: device_id.to_owned(),
            module_id: module_id.map(str::to_owned),
            generation_id: self.next_sequence().to_string(),
            etag: self.next_etag(),
            status: spec.status,
            status_reason: spec.status_reason,
            status_updated_time: NEVER.to_owned(),
            credentials: spec.credentials,
            iot_edge: spec.iot_edge,
            device_scope: spec.device_scope,
            parent_scopes: spec.parent_scopes,
            managed_by: spec.managed_by,
            last_activity_time: NEVER.to_owned(),
            connection_state_updated_time: NEVER.to_owned(),
            twin: TwinState::new(&now()),
        })
    }

    /// Makes a stored identity the live one. A device that is disabled now is disconnected
    /// (its modules too): the change is stored, so its reconnects are refused (CONNACK 5)
    /// until it is enabled again.
    /// A new identity's lifecycle event is emitted here (every create comes this way).
    pub(super) fn install_identity(&mut self, record: IdentityRecord) {
        if record.module_id.is_none() && record.status == Status::Disabled {
            self.links
                .close_device(&record.device_id, "the device is disabled");
        }
        if self
            .record(&record.device_id, record.module_id.as_deref())
            .is_err()
        {
            self.emit_lifecycle(&record, true);
        }
        self.install(record);
    }

    /// Makes a stored record (identity or twin change) the live one.
    fn install(&mut self, record: IdentityRecord) {
        match record.module_id.clone() {
            None => {
                let device_id = record.device_id.clone();
                match self.devices.get_mut(&device_id) {
                    Some(entry) => entry.record = record,
                    None => {
                        self.devices.insert(
                            device_id,
                            DeviceEntry {
                                record,
                                modules: BTreeMap::new(),
                            },
                        );
                    }
                }
            }
            Some(module) => {
                if let Some(entry) = self.devices.get_mut(&record.device_id) {
                    entry.modules.insert(module, record);
                }
            }
        }
    }

    /// `DELETE /devices/{id}[/modules/{mid}]`: `If-Match` is optional (Python and Node send
    /// `"*"`); a stale one is 412. Deleting a device deletes its modules and its C2D queue in
    /// the same transaction, then closes their connections and drops their persistent
    /// sessions and method subscriptions.
    /// The caller answers 204.
    pub(crate) fn delete_identity(
        &mut self,
        device_id: &str,
        module_id: Option<&str>,
        if_match: Option<&str>,
    ) -> Result<(), HubError> {
        let record = self.record(device_id, module_id)?;
        if let Some(tag) = if_match {
            check_if_match(tag, &record.etag)?;
        }
        let change = match module_id {
            Some(m) => Change::DeleteModule(device_id, m),
            None => Change::DeleteDevice(device_id),
        };
        self.store.apply(&[change])?;
        self.forget(device_id, module_id);
        Ok(())
    }

    /// Removes a deleted identity from memory and drops its connections; a device's queued
    /// C2D messages go without feedback (the store dropped them in the delete transaction).
    /// The deleted identity's lifecycle event is emitted here (every delete comes this way).
    fn forget(&mut self, device_id: &str, module_id: Option<&str>) {
        if let Ok(record) = self.record(device_id, module_id) {
            let record = record.clone();
            self.emit_lifecycle(&record, false);
        }
        self.configurations.forget(device_id, module_id);
        match module_id {
            Some(m) => {
                if let Some(entry) = self.devices.get_mut(device_id) {
                    entry.modules.remove(m);
                }
                self.links.forget(&Identity::module(device_id, m));
            }
            None => {
                self.devices.remove(device_id);
                self.links.forget_device(device_id);
                self.forget_c2d(device_id);
            }
        }
    }

    // ---- bulk ---------------------------------------------------------------------------

    /// `POST /devices`: up to 100 create/update/delete/updateTwin entries. Each entry succeeds
    /// or fails on its own; all successful changes are written in one transaction.
    ///
    /// Answers `(all succeeded, BulkRegistryOperationResult)`; the handler maps the flag to
    /// 200 or 400 with the same body (Python deserializes both). Failures are reported per
    /// entry with `errorCode` as the *name* (`DeviceAlreadyExists`), as the hub does. Entries
    /// are applied in order against a staged view, so a `create` followed by an `updateTwin`
    /// of the same id in one call works. An empty call or more than 100 entries (the hub's
    /// limit, also enforced by the Node SDK) is refused as a whole with 400.
    pub(crate) fn bulk(&mut self, entries: Vec<Value>) -> Result<(bool, Value), HubError> {
        if entries.is_empty() || entries.len() > MAX_BULK_ENTRIES {
            return Err(HubError::invalid(format!(
                "a bulk registry operation takes 1 to {MAX_BULK_ENTRIES} devices, not {}",
                entries.len()
            )));
        }
        // Work on copies; commit them together at the end.
        let mut staged: Vec<(String, Option<String>, Option<IdentityRecord>)> = Vec::new();
        let mut errors = Vec::new();
        for entry in entries {
            let parsed: Result<BulkEntry, _> = serde_json::from_value(entry.clone());
            let id_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
            let device_id = id_of(&entry, "id").unwrap_or_default();
            let module_id = id_of(&entry, "moduleId");
            let outcome = parsed
                .map_err(|e| HubError::invalid(format!("invalid bulk entry: {e}")))
                .and_then(|e| self.bulk_entry(e, &staged));
            match outcome {
                Ok(change) => {
                    // Later entries for the same identity see this one's result.
                    staged.retain(|(d, m, _)| !(d == &change.0 && m == &change.1));
                    staged.push(change);
                }
                Err(e) => {
                    let mut error = json!({
                        "deviceId": device_id,
                        "errorCode": e.code.name(),
                        "errorStatus": e.message,
                    });
                    if let (Some(m), Some(map)) = (module_id, error.as_object_mut()) {
                        map.insert("moduleId".into(), json!(m));
                    }
                    errors.push(error);
                }
            }
        }
        let changes: Vec<Change<'_>> = staged
            .iter()
            .map(|(d, m, record)| match (record, m) {
                (Some(r), _) => Change::Put(r),
                (None, Some(m)) => Change::DeleteModule(d, m),
                (None, None) => Change::DeleteDevice(d),
            })
            .collect();
        self.store.apply(&changes)?;
        for (device_id, module_id, record) in staged {
            match record {
                Some(r) => {
                    self.install_identity(r);
                    self.reconcile_twin(&device_id, module_id.as_deref());
                }
                None => self.forget(&device_id, module_id.as_deref()),
            }
        }
        let ok = errors.is_empty();
        Ok((
            ok,
            json!({"isSuccessful": ok, "errors": errors, "warnings": []}),
        ))
    }

    /// Validates one `ExportImportDevice` and computes its effect: the record to store, or
    /// `None` for a delete. `importMode` is matched case-insensitively because Node sends
    /// `create` but `Update`, `Delete`, `UpdateIfMatchETag`. `updateIfMatchETag` and
    /// `deleteIfMatchETag` check `eTag` against the identity ETag, `updateTwinIfMatchETag`
    /// checks `twinETag` against the twin ETag; a missing tag in a conditional mode never
    /// matches. Nothing is written here.
    fn bulk_entry(
        &mut self,
        entry: BulkEntry,
        staged: &[(String, Option<String>, Option<IdentityRecord>)],
    ) -> Result<(String, Option<String>, Option<IdentityRecord>), HubError> {
        let device_id = entry.id.clone();
        let module_id = entry.module_id.clone().filter(|m| !m.is_empty());
        validate_id("device", &device_id)?;
        if let Some(m) = &module_id {
            validate_id("module", m)?;
        }
        // The view of this identity including earlier entries of the same call.
        let staged_view = staged
            .iter()
            .rev()
            .find(|(d, m, _)| *d == device_id && *m == module_id)
            .map(|(_, _, r)| r.clone());
        let current = match staged_view {
            Some(view) => view,
            None => self.record(&device_id, module_id.as_deref()).ok().cloned(),
        };
        let mode = entry.import_mode.to_ascii_lowercase();
        let etag = entry.e_tag.clone();
        match mode.as_str() {
            "create"
            | "update"
            | "updateifmatchetag"
            | "createorupdate"
            | "createorupdateifmatchetag" => {
                if mode == "create" && current.is_some() {
                    return Err(HubError::new(
                        ErrorCode::DeviceAlreadyExists,
                        format!("Device {device_id} already exists"),
                    ));
                }
                if (mode == "updateifmatchetag" || mode == "createorupdateifmatchetag")
                    && let Some(record) = &current
                {
                    check_if_match(etag.as_deref().unwrap_or(""), &record.etag)?;
                }
                if module_id.is_some()
                    && self.record(&device_id, None).is_err()
                    && !staged
                        .iter()
                        .any(|(d, m, r)| *d == device_id && m.is_none() && r.is_some())
                {
                    return Err(HubError::device_not_found(&device_id));
                }
                let twin_body = json!({"tags": entry.tags, "properties": {"desired": entry.properties.as_ref().and_then(|p| p.get("desired")).cloned()}});
                let spec = entry.identity.validate(&device_id, module_id.as_deref())?;
                let mut record = match current {
                    Some(mut record) => {
                        self.update_record(&mut record, spec)?;
                        record
                    }
                    None => self.new_record(&device_id, module_id.as_deref(), spec)?,
                };
                record.twin.patch_from_service(&twin_body, &now())?;
                Ok((device_id, module_id, Some(record)))
            }
            "delete" | "deleteifmatchetag" => {
                let record = current.ok_or_else(|| match &module_id {
                    Some(m) => HubError::module_not_found(&device_id, m),
                    None => HubError::device_not_found(&device_id),
                })?;
                if mode == "deleteifmatchetag" {
                    check_if_match(etag.as_deref().unwrap_or(""), &record.etag)?;
                }
                Ok((device_id, module_id, None))
            }
            "updatetwin" | "updatetwinifmatchetag" => {
                let mut record = current.ok_or_else(|| HubError::device_not_found(&device_id))?;
                if mode == "updatetwinifmatchetag" {
                    check_if_match(
                        entry.twin_e_tag.as_deref().unwrap_or(""),
                        &record.twin.etag(),
                    )?;
                }
                let body = json!({"tags": entry.tags, "properties": {"desired": entry.properties.as_ref().and_then(|p| p.get("desired")).cloned()}});
                record.twin.patch_from_service(&body, &now())?;
                Ok((device_id, module_id, Some(record)))
            }
            other => Err(HubError::invalid(format!(
                "importMode `{other}` is not one of createOrUpdate, create, update, updateIfMatchETag, createOrUpdateIfMatchETag, delete, deleteIfMatchETag, updateTwin, updateTwinIfMatchETag"
            ))),
        }
    }

    // ---- statistics ---------------------------------------------------------------------

    /// `GET /statistics/devices`: total, enabled and disabled device counts (modules are not
    /// devices and are not counted).
    pub(crate) fn device_statistics(&self) -> Value {
        let total = self.devices.len();
        let enabled = self
            .devices
            .values()
            .filter(|e| e.record.status == super::identity::Status::Enabled)
            .count();
        json!({
            "totalDeviceCount": total,
            "enabledDeviceCount": enabled,
            "disabledDeviceCount": total - enabled,
        })
    }

    /// `GET /statistics/service`: `connectedDeviceCount`, devices with a live connection now.
    pub(crate) fn service_statistics(&self) -> Value {
        json!({"connectedDeviceCount": self.links.connected_devices()})
    }

    // ---- twins --------------------------------------------------------------------------

    /// The service-side twin document (`GET /twins/{id}`, query results): identity facts
    /// (`deviceEtag`, status, connection state, authentication type, thumbprints) next to
    /// `tags` and both property sections with `$metadata` and `$version`. `etag` is the
    /// *twin* ETag, distinct from the identity's. Device-only members (`capabilities`,
    /// `deviceScope`, `parentScopes`) are left out of module twins, `moduleId` out of device
    /// twins, and `tags` when empty, as the hub renders them.
    fn twin_json(&self, record: &IdentityRecord) -> Value {
        let connected = self.is_connected(&record.device_id, record.module_id.as_deref());
        let mut twin = json!({
            "deviceId": record.device_id,
            "etag": record.twin.etag(),
            "deviceEtag": record.etag,
            "status": record.status.as_str(),
            "statusUpdateTime": record.status_updated_time,
            "connectionState": if connected { "Connected" } else { "Disconnected" },
            "lastActivityTime": record.last_activity_time,
            "cloudToDeviceMessageCount": if record.module_id.is_none() { self.c2d_count(&record.device_id) } else { 0 },
            "authenticationType": record.credentials.auth_type.as_str(),
            "x509Thumbprint": {
                "primaryThumbprint": record.credentials.primary_thumbprint,
                "secondaryThumbprint": record.credentials.secondary_thumbprint,
            },
            "modelId": record.twin.model_id,
            "version": record.twin.version,
        });
        if let Some(map) = twin.as_object_mut() {
            match &record.module_id {
                Some(m) => {
                    map.insert("moduleId".into(), json!(m));
                }
                None => {
                    map.insert("capabilities".into(), json!({"iotEdge": record.iot_edge}));
                    if let Some(scope) = &record.device_scope {
                        map.insert("deviceScope".into(), json!(scope));
                    }
                    if !record.parent_scopes.is_empty() {
                        map.insert("parentScopes".into(), json!(record.parent_scopes));
                    }
                }
            }
            if !record.twin.tags.is_empty() {
                map.insert("tags".into(), Value::Object(record.twin.tags.clone()));
            }
            map.insert("properties".into(), record.twin.properties_json(true));
            if let Some(member) = self
                .configurations
                .twin_member(&record.device_id, record.module_id.as_deref())
            {
                map.insert("configurations".into(), member);
            }
        }
        self.stamp_activity(record, &mut twin);
        twin
    }

    /// `GET /twins/{id}[/modules/{mid}]`.
    pub(crate) fn get_twin(
        &self,
        device_id: &str,
        module_id: Option<&str>,
    ) -> Result<Value, HubError> {
        Ok(self.twin_json(self.record(device_id, module_id)?))
    }

    /// `PATCH` (merge) or `PUT` (replace) of a twin from the service.
    ///
    /// `If-Match` is checked against the twin ETag (Python always sends one, `"*"` by
    /// default; Node requires the caller's). On success the twin version grows and the ETag
    /// changes. If the desired section changed, each connected identity subscribed to desired
    /// properties gets a patch after the commit: for a merge, the desired part of the body as
    /// sent; for a replace, the new desired document with `null` for every key it removed, so
    /// the device's copy converges either way. Both carry the new desired `$version`.
    ///
    /// Configurations are re-evaluated for the twin afterwards (its tags may now match a
    /// target condition); the answer is the twin as the service's write left it.
    pub(crate) fn update_twin(
        &mut self,
        device_id: &str,
        module_id: Option<&str>,
        body: &Value,
        if_match: Option<&str>,
        replace: bool,
    ) -> Result<Value, HubError> {
        let json = self.write_twin(device_id, module_id, body, if_match, replace)?;
        self.reconcile_twin(device_id, module_id);
        Ok(json)
    }

    /// The write of [`update_twin`](Self::update_twin) without re-evaluating configurations:
    /// what configurations themselves write with.
    pub(super) fn write_twin(
        &mut self,
        device_id: &str,
        module_id: Option<&str>,
        body: &Value,
        if_match: Option<&str>,
        replace: bool,
    ) -> Result<Value, HubError> {
        let write = self.prepare_twin_write(device_id, module_id, body, if_match, replace)?;
        self.store.apply(&[Change::Put(&write.record)])?;
        Ok(self.finish_twin_write(write))
    }

    /// Step 1 of a twin write (see [`Self::write_twin`]): checks `If-Match`, applies the body
    /// to a copy of the record and works out the desired patch connected devices get. Nothing
    /// is stored or changed; the caller stores `record` and then calls
    /// [`Self::finish_twin_write`]. Jobs use the two halves to store many twins and their job
    /// rows in one transaction.
    pub(super) fn prepare_twin_write(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        body: &Value,
        if_match: Option<&str>,
        replace: bool,
    ) -> Result<TwinWrite, HubError> {
        let mut record = self.record(device_id, module_id)?.clone();
        if let Some(tag) = if_match {
            check_if_match(tag, &record.twin.etag())?;
        }
        let now = now();
        let before = record.twin.desired.clone();
        let desired_version = record.twin.desired_version;
        if replace {
            record.twin.replace_from_service(body, &now)?;
        } else {
            record.twin.patch_from_service(body, &now)?;
        }
        let changed = record.twin.version != self.record(device_id, module_id)?.twin.version;
        let mut desired_patch = None;
        if record.twin.desired_version != desired_version {
            // Connected devices subscribed to desired properties get the change as a patch.
            let mut patch = if replace {
                let mut full = record.twin.desired.clone();
                for key in before
                    .keys()
                    .filter(|k| !full.contains_key(*k))
                    .cloned()
                    .collect::<Vec<_>>()
                {
                    full.insert(key, Value::Null);
                }
                full
            } else {
                body.pointer("/properties/desired")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default()
            };
            patch.insert("$version".into(), json!(record.twin.desired_version));
            desired_patch = Some(Value::Object(patch));
        }
        Ok(TwinWrite {
            record,
            desired_patch,
            change: (changed && self.routes(MessageSource::TwinChangeEvents)).then(|| TwinChange {
                replace,
                body: body.clone(),
            }),
        })
    }

    /// Step 2 of a twin write, after its record was stored: pushes the desired patch to the
    /// connected identity, installs the record and returns the twin document.
    pub(super) fn finish_twin_write(&mut self, write: TwinWrite) -> Value {
        let TwinWrite {
            record,
            desired_patch,
            change,
        } = write;
        if let Some(change) = change {
            self.emit_service_twin_change(&record, &change);
        }
        let json = self.twin_json(&record);
        if let Some(patch) = desired_patch {
            let identity = match &record.module_id {
                Some(m) => Identity::module(&record.device_id, m),
                None => Identity::device(&record.device_id),
            };
            self.links.push_desired(&identity, patch);
        }
        self.install(record);
        json
    }

    /// Twin documents for a query over `devices` (`modules = false`) or `devices.modules`,
    /// in (device id, module id) order.
    pub(crate) fn twin_documents(&self, modules: bool) -> Vec<Value> {
        if modules {
            self.devices
                .values()
                .flat_map(|e| e.modules.values())
                .map(|r| self.twin_json(r))
                .collect()
        } else {
            self.devices
                .values()
                .map(|e| self.twin_json(&e.record))
                .collect()
        }
    }

    // ---- direct methods -------------------------------------------------------------------

    /// Where to send a method call for the identity: now, or once it subscribes.
    ///
    /// Checks that the identity exists first (404 `DeviceNotFound` / `ModuleNotFound` is
    /// answered before any waiting). A `Wait` target is a oneshot the state fills when the
    /// identity subscribes to methods; the REST handler bounds the wait by
    /// `connectTimeoutInSeconds`.
    pub(crate) fn method_target(
        &mut self,
        device_id: &str,
        module_id: Option<&str>,
    ) -> Result<MethodTarget, HubError> {
        self.record(device_id, module_id)?;
        let identity = match module_id {
            Some(m) => Identity::module(device_id, m),
            None => Identity::device(device_id),
        };
        Ok(self.links.method_target(identity))
    }

    /// Stores and installs a changed record: the write-through step for device-side twin
    /// writes (reported properties, model id) made through the device core.
    pub(super) fn save(&mut self, record: IdentityRecord) -> Result<(), HubError> {
        self.store.apply(&[Change::Put(&record)])?;
        self.install(record);
        Ok(())
    }
}

/// A twin write validated and applied to a copy, not stored yet (see
/// [`HubState::prepare_twin_write`]).
pub(super) struct TwinWrite {
    /// The identity record with its new twin: what to store.
    pub(super) record: IdentityRecord,
    /// The desired patch for the connected identity, if the desired section changed.
    desired_patch: Option<Value>,
    /// The write, if it changed the twin (for its twin change event).
    change: Option<TwinChange>,
}

/// A service twin write that changed the twin: what its twin change event describes.
pub(super) struct TwinChange {
    /// A replace (`PUT`), not a merge patch.
    pub(super) replace: bool,
    /// The body as the service sent it.
    pub(super) body: Value,
}

/// One entry of a bulk registry call (`ExportImportDevice`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkEntry {
    /// The device id: named `id` here, not `deviceId` as everywhere else.
    id: String,
    /// The module id; absent or empty for a device entry.
    module_id: Option<String>,
    /// Identity ETag for the `...IfMatchETag` modes (note the spelling `eTag`).
    #[serde(rename = "eTag")]
    e_tag: Option<String>,
    /// `createOrUpdate`, `create`, `update`, `updateIfMatchETag`, `createOrUpdateIfMatchETag`,
    /// `delete`, `deleteIfMatchETag`, `updateTwin`, `updateTwinIfMatchETag`, in any case
    /// (`update` creates a missing identity, like `createOrUpdate`).
    import_mode: String,
    /// Twin ETag for `updateTwinIfMatchETag`.
    #[serde(rename = "twinETag")]
    twin_e_tag: Option<String>,
    /// Tags merged into the twin (create, update, updateTwin).
    tags: Option<Map<String, Value>>,
    /// `{desired, reported}`; only `desired` is applied, as in a service twin patch.
    properties: Option<Map<String, Value>>,
    /// The identity members (`status`, `authentication`, `capabilities` ...), shared with
    /// `PUT /devices/{id}`.
    #[serde(flatten)]
    identity: IdentityBody,
}

/// `If-Match` rules: quotes are stripped, `*` matches anything, anything else must equal the
/// current ETag.
///
/// SDKs disagree on quoting (Python and Node quote, Python's configuration client sends the
/// ETag raw), so both forms are accepted. A mismatch is 412 `PreconditionFailed`, and the
/// request changes nothing.
pub(crate) fn check_if_match(if_match: &str, current: &str) -> Result<(), HubError> {
    let tag = if_match.trim();
    let tag = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(tag);
    if tag == "*" || tag == current {
        Ok(())
    } else {
        Err(HubError::precondition_failed())
    }
}
