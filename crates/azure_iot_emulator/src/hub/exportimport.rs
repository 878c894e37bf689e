//! The registry side of import/export devices jobs: job records, the export snapshot and the
//! import of `ExportImportDevice` lines. Blob I/O and the job's progress are driven by
//! `crate::exportimport`, which calls these on the state thread.
//!
//! * **Export**: one JSON line per identity (devices in id order, each followed by its
//!   modules): `id`, `moduleId`, `eTag`, `status`, `statusReason`, `authentication` (keys
//!   blanked with `excludeKeysInExport`), `twinETag`, `tags`, `properties.desired` and
//!   `.reported` (without `$metadata` / `$version`), and for devices `capabilities`,
//!   `deviceScope`, `parentScopes`. The snapshot is taken in one state call, so it is
//!   consistent.
//! * **Import**: every `importMode` of the bulk registry API (`HubState::bulk`, which this
//!   reuses 100 lines at a time, one transaction each), `createOrUpdate` when a line names
//!   none. A line that is not JSON or fails is reported as the hub does, as a JSON line in
//!   `importErrors.log` with its line number, device id, error code and message; the other
//!   lines are applied.
//! * **Records**: in memory (a restart forgets the records, not what the jobs did; a job
//!   running at the time never completes), at most [`MAX_JOB_RECORDS`]: the oldest finished record makes room for a new one; when every
//!   record is of a job still running, a new job is refused.

use azure_iot_protocol::configuration::Configuration;
use azure_iot_protocol::export_import::ExportImportJob;
use serde_json::{Map, Value, json};

use super::HubState;
use super::error::{ErrorCode, HubError};
use super::state::{MAX_BULK_ENTRIES, now};

/// The most job records kept.
pub(crate) const MAX_JOB_RECORDS: usize = 100;

/// The hub's import/export job records, oldest first.
#[derive(Default)]
pub(crate) struct ExportImportJobs {
    jobs: Vec<ExportImportJob>,
}

impl ExportImportJobs {
    fn get_mut(&mut self, id: &str) -> Option<&mut ExportImportJob> {
        self.jobs
            .iter_mut()
            .find(|j| j.job_id.as_deref() == Some(id))
    }
}

impl HubState {
    /// Records a new job as `enqueued` with a fresh id (a GUID, as the hub's) and start time.
    pub(crate) fn add_export_job(
        &mut self,
        mut job: ExportImportJob,
    ) -> Result<ExportImportJob, HubError> {
        let jobs = &mut self.export_jobs.jobs;
        if jobs.len() >= MAX_JOB_RECORDS {
            match jobs.iter().position(ExportImportJob::is_finished) {
                Some(oldest_finished) => {
                    jobs.remove(oldest_finished);
                }
                None => {
                    return Err(HubError::new(
                        ErrorCode::Throttled,
                        "too many import/export jobs are running; wait for one to end",
                    ));
                }
            }
        }
        job.job_id = Some(uuid::Uuid::new_v4().to_string());
        job.status = Some("enqueued".into());
        job.progress = Some(0);
        job.start_time_utc = Some(now());
        job.end_time_utc = None;
        job.failure_reason = None;
        jobs.push(job.clone());
        Ok(job)
    }

    /// Moves a job on: `running`, or finished (`completed` / `failed` with a reason). A job
    /// already cancelled stays cancelled.
    pub(crate) fn set_export_job_status(
        &mut self,
        id: &str,
        status: &str,
        failure: Option<String>,
    ) {
        if let Some(job) = self.export_jobs.get_mut(id) {
            if job.status.as_deref() == Some("cancelled") {
                return;
            }
            job.status = Some(status.to_owned());
            if status != "running" {
                job.end_time_utc = Some(now());
                job.progress = Some(100);
            }
            job.failure_reason = failure;
        }
    }

    /// `GET /jobs/{id}`: 404 `JobNotFound`-like `NotFound` for an unknown id.
    pub(crate) fn get_export_job(&self, id: &str) -> Result<ExportImportJob, HubError> {
        self.export_jobs
            .jobs
            .iter()
            .find(|j| j.job_id.as_deref() == Some(id))
            .cloned()
            .ok_or_else(|| job_not_found(id))
    }

    /// `GET /jobs`: every recorded job, oldest first.
    pub(crate) fn list_export_jobs(&self) -> Vec<ExportImportJob> {
        self.export_jobs.jobs.clone()
    }

    /// `DELETE /jobs/{id}`: a job not finished yet becomes `cancelled` (what it already
    /// wrote stays); a finished one is left as it is.
    pub(crate) fn cancel_export_job(&mut self, id: &str) -> Result<ExportImportJob, HubError> {
        let job = self
            .export_jobs
            .get_mut(id)
            .ok_or_else(|| job_not_found(id))?;
        if !job.is_finished() {
            job.status = Some("cancelled".into());
            job.end_time_utc = Some(now());
        }
        Ok(job.clone())
    }

    /// The export snapshot: one `ExportImportDevice` JSON text per identity.
    pub(crate) fn export_lines(&self, exclude_keys: bool) -> Vec<String> {
        let mut lines = Vec::new();
        for modules in [false, true] {
            for twin in self.twin_documents(modules) {
                let device_id = twin["deviceId"].as_str().unwrap_or_default();
                let module_id = twin["moduleId"].as_str();
                let Ok(identity) = self.get_identity(device_id, module_id) else {
                    continue;
                };
                lines.push(export_line(&identity, &twin, exclude_keys).to_string());
            }
        }
        // Devices first, then modules; a module must follow its device for an import.
        lines
    }

    /// Every configuration, one JSON text per line (`includeConfigurations`).
    pub(crate) fn export_configuration_lines(&self) -> Vec<String> {
        self.list_configurations(usize::MAX)
            .into_iter()
            .map(|c| c.to_string())
            .collect()
    }

    /// Imports configuration lines (`includeConfigurations`): each is created, or updated
    /// whatever its ETag; answers the error lines.
    pub(crate) fn import_configuration_lines(&mut self, text: &str) -> Vec<String> {
        let mut errors = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let outcome = serde_json::from_str::<Configuration>(line)
                .map_err(|e| HubError::invalid(format!("not a configuration: {e}")))
                .and_then(|config| {
                    let id = config.id.clone();
                    self.put_configuration(&id, config, Some("*"))
                });
            if let Err(e) = outcome {
                errors.push(
                    json!({"line": index + 1, "blob": "configurations", "errorCode": e.code.name(), "errorStatus": e.message})
                        .to_string(),
                );
            }
        }
        errors
    }

    /// Imports `ExportImportDevice` lines; answers the error lines (empty: all applied).
    pub(crate) fn import_lines(&mut self, text: &str) -> Result<Vec<String>, HubError> {
        let mut errors = Vec::new();
        let mut batch: Vec<(usize, Value)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(mut entry)) => {
                    if !entry.get("importMode").is_some_and(Value::is_string) {
                        entry.insert("importMode".into(), json!("createOrUpdate"));
                    }
                    batch.push((number, Value::Object(entry)));
                }
                Ok(_) | Err(_) => errors.push(
                    json!({"line": number, "errorCode": "ArgumentInvalid", "errorStatus": "the line is not a JSON object"})
                        .to_string(),
                ),
            }
            if batch.len() == MAX_BULK_ENTRIES {
                self.import_batch(std::mem::take(&mut batch), &mut errors)?;
            }
        }
        if !batch.is_empty() {
            self.import_batch(batch, &mut errors)?;
        }
        Ok(errors)
    }

    /// Applies up to 100 lines in one bulk call, adding its failures (with their line
    /// numbers) to `errors`.
    fn import_batch(
        &mut self,
        batch: Vec<(usize, Value)>,
        errors: &mut Vec<String>,
    ) -> Result<(), HubError> {
        let numbers: Vec<(usize, String, Option<String>)> = batch
            .iter()
            .map(|(n, v)| {
                (
                    *n,
                    v["id"].as_str().unwrap_or_default().to_owned(),
                    v["moduleId"].as_str().map(str::to_owned),
                )
            })
            .collect();
        let (_, result) = self.bulk(batch.into_iter().map(|(_, v)| v).collect())?;
        let mut used = vec![false; numbers.len()];
        for error in result["errors"].as_array().into_iter().flatten() {
            let device = error["deviceId"].as_str().unwrap_or_default();
            let module = error["moduleId"].as_str();
            // The first unreported line of that identity is the one that failed.
            let line = numbers
                .iter()
                .enumerate()
                .find(|(i, (_, d, m))| !used[*i] && d == device && m.as_deref() == module);
            let mut out = Map::new();
            if let Some((i, (number, _, _))) = line {
                used[i] = true;
                out.insert("line".into(), json!(number));
            }
            if let Value::Object(fields) = error {
                out.extend(fields.clone());
            }
            errors.push(Value::Object(out).to_string());
        }
        Ok(())
    }
}

/// One export line from an identity's registry JSON and its twin document.
fn export_line(identity: &Value, twin: &Value, exclude_keys: bool) -> Value {
    let strip = |section: &Value| -> Value {
        let mut map = section.as_object().cloned().unwrap_or_default();
        map.retain(|k, _| !k.starts_with('$'));
        Value::Object(map)
    };
    let mut authentication = identity["authentication"].clone();
    if exclude_keys && let Some(keys) = authentication.get_mut("symmetricKey") {
        *keys = json!({"primaryKey": null, "secondaryKey": null});
    }
    let mut line = json!({
        "id": identity["deviceId"],
        "eTag": identity["etag"],
        "status": identity["status"],
        "statusReason": identity["statusReason"],
        "authentication": authentication,
        "twinETag": twin["etag"],
        "tags": twin.get("tags").cloned().unwrap_or_else(|| json!({})),
        "properties": {
            "desired": strip(&twin["properties"]["desired"]),
            "reported": strip(&twin["properties"]["reported"]),
        },
    });
    if let Some(map) = line.as_object_mut() {
        match identity["moduleId"].as_str() {
            Some(module) => {
                map.insert("moduleId".into(), json!(module));
                if let Some(by) = identity.get("managedBy") {
                    map.insert("managedBy".into(), by.clone());
                }
            }
            None => {
                map.insert("capabilities".into(), identity["capabilities"].clone());
                for key in ["deviceScope", "parentScopes"] {
                    if let Some(v) = identity.get(key) {
                        map.insert(key.into(), v.clone());
                    }
                }
            }
        }
    }
    line
}

/// 404 for an unknown import/export job id.
fn job_not_found(id: &str) -> HubError {
    HubError::new(ErrorCode::EndpointNotFound, format!("Job {id} not found"))
}
