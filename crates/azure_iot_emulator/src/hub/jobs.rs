//! Jobs v2: scheduled twin updates and direct methods over the devices a query condition
//! selects (`/jobs/v2/...`, `SELECT * FROM devices.jobs`), as state on the hub's thread.
//!
//! A job is a [`JobResponse`] record plus one [`DeviceJob`] row per targeted device, both stored
//! as JSON (`jobs`, `device_jobs` tables) before memory changes, like every hub write (ADR 4).
//! This module holds the rules; the waiting (start time, method calls, the maximum execution
//! time) happens in the scheduler task (`crate::jobs`), which drives a job through these steps:
//!
//! ```text
//!  create_job ──▶ scheduled ──start_job──▶ running ──(twin chunks | begin/end_device)──▶
//!      finish_job ──▶ completed            cancel_job (scheduled or running) ──▶ cancelled
//! ```
//!
//! * `start_job` evaluates the query condition over the device twins at the start time (devices
//!   added later are not part of the job, as on the hub) and creates their rows as `pending`.
//! * Twin jobs write a chunk of twins and their rows in one transaction through the hub's twin
//!   code (`prepare_twin_write` / `finish_twin_write`), so connected devices get their desired
//!   patches as for any service twin update.
//! * Method jobs mark a row `running`, call the device (`hub::methods::invoke`, the code of
//!   `POST /twins/{id}/methods`) outside the state thread and record its answer or the hub's
//!   error (`DeviceNotOnline`, `GatewayTimeout`) as the row's `outcome` or `error`.
//! * At the maximum execution time the job completes and rows still pending or running fail.
//! * Cancel marks every unfinished row `canceled` (one l) and the job `cancelled` (two l).
//!
//! Bounds: at most [`MAX_ACTIVE_JOBS`] scheduled or running jobs (more is 403
//! `JobQuotaExceeded`), and at most [`MAX_RETAINED_JOBS`] jobs kept: creating one beyond that
//! drops the oldest finished job with its rows (the hub keeps history for 30 days; the emulator
//! bounds it by count). Rows per job are bounded by the registry.

use std::collections::BTreeMap;
use std::sync::Arc;

use azure_iot_core::method::{DirectMethodRequest, DirectMethodResponse};
use azure_iot_protocol::jobs::{
    DEFAULT_MAX_EXECUTION_TIME_SECS, DeviceJob, DeviceJobError, DeviceJobOutcome,
    DeviceJobStatistics, DeviceJobStatus, JobRequest, JobResponse, JobStatus, JobType,
    validate_job_id,
};
use azure_iot_query::Condition;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc};

use super::error::{ErrorCode, HubError};
use super::methods::validate_request;
use super::state::{HubState, TwinWrite, now};
use super::twin::TwinState;
use crate::error::EmulatorError;
use crate::store::{Change, Store};

/// The most jobs that may be scheduled or running at once.
pub(crate) const MAX_ACTIVE_JOBS: usize = 10;
/// The most jobs kept, finished ones included.
pub(crate) const MAX_RETAINED_JOBS: usize = 100;
/// The device job error code of a device the job did not reach before its maximum execution
/// time.
pub(crate) const TIMED_OUT_CODE: &str = "JobTimedOut";

/// One job and its device rows.
struct JobEntry {
    /// The job as stored (statistics are computed from `devices` when rendered).
    job: JobResponse,
    /// Its device rows, by device id.
    devices: BTreeMap<String, DeviceJob>,
    /// Wakes the job's runner when the job is cancelled.
    cancel: Arc<Notify>,
}

impl JobEntry {
    /// The job with its current statistics.
    fn render(&self) -> JobResponse {
        let mut stats = DeviceJobStatistics {
            device_count: self.devices.len() as u64,
            ..DeviceJobStatistics::default()
        };
        for row in self.devices.values() {
            match row.status {
                DeviceJobStatus::Completed => stats.succeeded_count += 1,
                DeviceJobStatus::Failed => stats.failed_count += 1,
                DeviceJobStatus::Running => stats.running_count += 1,
                DeviceJobStatus::Pending | DeviceJobStatus::Scheduled => stats.pending_count += 1,
                _ => {}
            }
        }
        let mut job = self.job.clone();
        job.device_job_statistics = Some(stats);
        job
    }

    fn is_active(&self) -> bool {
        matches!(self.job.status, JobStatus::Scheduled | JobStatus::Running)
    }

    fn is_running(&self) -> bool {
        self.job.status == JobStatus::Running
    }
}

/// Every job the hub knows, and the scheduler's wake-up channel.
#[derive(Default)]
pub(crate) struct Jobs {
    entries: BTreeMap<String, JobEntry>,
    /// Tells the scheduler task about a new job (`None` until it attaches, and in unit tests
    /// that drive jobs by hand).
    wake: Option<mpsc::Sender<String>>,
}

impl Jobs {
    /// Loads the stored jobs and rows. A row of a job that is not stored, or a record that no
    /// longer parses, stops the start: the database was edited or is corrupt.
    pub(crate) fn load(store: &Store) -> Result<Self, EmulatorError> {
        let mut entries = BTreeMap::new();
        for (id, json) in store.job_rows()? {
            let job: JobResponse = serde_json::from_str(&json)
                .map_err(|e| EmulatorError::Storage(format!("job `{id}` is corrupt: {e}")))?;
            entries.insert(
                id,
                JobEntry {
                    job,
                    devices: BTreeMap::new(),
                    cancel: Arc::default(),
                },
            );
        }
        for (job_id, device_id, json) in store.device_job_rows()? {
            let row: DeviceJob = serde_json::from_str(&json).map_err(|e| {
                EmulatorError::Storage(format!("job `{job_id}` row `{device_id}` is corrupt: {e}"))
            })?;
            let entry = entries.get_mut(&job_id).ok_or_else(|| {
                EmulatorError::Storage(format!(
                    "device job `{device_id}` of unknown job `{job_id}`"
                ))
            })?;
            entry.devices.insert(device_id, row);
        }
        Ok(Self {
            entries,
            wake: None,
        })
    }

    /// Jobs created before now that have not finished, oldest first.
    fn active_ids(&self) -> Vec<String> {
        let mut active: Vec<&JobEntry> = self.entries.values().filter(|e| e.is_active()).collect();
        active.sort_by_key(|e| e.job.created_time);
        active.iter().map(|e| e.job.job_id.clone()).collect()
    }

    /// The finished jobs to drop so that one more fits in [`MAX_RETAINED_JOBS`], oldest first.
    fn evictions(&self) -> Vec<String> {
        let excess = (self.entries.len() + 1).saturating_sub(MAX_RETAINED_JOBS);
        let mut finished: Vec<&JobEntry> =
            self.entries.values().filter(|e| !e.is_active()).collect();
        finished.sort_by_key(|e| e.job.created_time);
        finished
            .iter()
            .take(excess)
            .map(|e| e.job.job_id.clone())
            .collect()
    }

    fn entry(&self, id: &str) -> Result<&JobEntry, HubError> {
        self.entries.get(id).ok_or_else(|| job_not_found(id))
    }
}

/// When a job starts and how its runner learns of a cancel.
pub(crate) struct JobPlan {
    /// The start time.
    pub(crate) start: OffsetDateTime,
    /// Notified when the job is cancelled.
    pub(crate) cancel: Arc<Notify>,
}

/// What a started (or resumed) job has left to do.
pub(crate) struct JobRun {
    /// The method to call (method jobs); `None` for twin jobs.
    pub(crate) method: Option<DirectMethodRequest>,
    /// Devices not processed yet, in id order.
    pub(crate) devices: Vec<String>,
    /// When the job's maximum execution time ends.
    pub(crate) deadline: OffsetDateTime,
}

fn job_not_found(id: &str) -> HubError {
    HubError::new(
        ErrorCode::JobNotFound,
        format!("Job with ID '{id}' not found"),
    )
}

/// The current time at the hub's precision (100 ns), so stored and rendered values agree.
fn now_utc() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 100 * 100)
        .unwrap_or(t)
}

/// The part of an `updateTwin` body a job applies: `tags` and `properties.desired`. The C# SDK
/// sends a whole twin (`deviceId`, `etag`, empty `reported`); those members are ignored.
fn twin_patch(update: &Value) -> Value {
    json!({
        "tags": update.get("tags").cloned().unwrap_or(Value::Null),
        "properties": {"desired": update.pointer("/properties/desired").cloned().unwrap_or(Value::Null)},
    })
}

/// A row's JSON for the store.
fn row_json(row: &DeviceJob) -> Result<String, HubError> {
    serde_json::to_string(row).map_err(HubError::storage)
}

impl HubState {
    /// Lets the scheduler task hear about new jobs; returns the jobs it must resume (scheduled
    /// or running when the emulator stopped), oldest first.
    pub(crate) fn attach_job_scheduler(&mut self, wake: mpsc::Sender<String>) -> Vec<String> {
        self.jobs.wake = Some(wake);
        self.jobs.active_ids()
    }

    /// `PUT /jobs/v2/{id}`: validates and stores a new job, `scheduled` until its start time
    /// (a start time in the past, or none, starts it at once, as the Node SDK's default "now"
    /// needs).
    ///
    /// Refused with nothing changed: an id that breaks the hub's rule or differs from the
    /// body's `jobId`, a missing or unparsable `queryCondition`, a twin job without a valid
    /// `updateTwin` (tags and/or desired properties), a method job without a valid
    /// `cloudToDeviceMethod` (name, timeouts in range), a job type other than the two
    /// schedulable ones, `maxExecutionTimeInSeconds` 0 (all 400); an existing id (409
    /// `JobAlreadyExists`); a full set of active jobs (403 `JobQuotaExceeded`).
    pub(crate) fn create_job(
        &mut self,
        id: &str,
        request: JobRequest,
    ) -> Result<JobResponse, HubError> {
        validate_job_id(id).map_err(|e| HubError::invalid(e.to_string()))?;
        if !request.job_id.is_empty() && request.job_id != id {
            return Err(HubError::invalid(format!(
                "the body's jobId `{}` differs from the job id `{id}` in the path",
                request.job_id
            )));
        }
        let condition = request.query_condition.trim();
        if condition.is_empty() {
            return Err(HubError::invalid("queryCondition is required"));
        }
        Condition::parse(condition)
            .map_err(|e| HubError::invalid(format!("queryCondition: {e}")))?;
        let (update_twin, method) = match &request.job_type {
            JobType::ScheduleUpdateTwin => {
                let update = request.update_twin.as_ref().ok_or_else(|| {
                    HubError::invalid("updateTwin is required for scheduleUpdateTwin")
                })?;
                let patch = twin_patch(update);
                let stamp = now();
                TwinState::new(&stamp).patch_from_service(&patch, &stamp)?;
                let non_empty =
                    |v: Option<&Value>| v.and_then(Value::as_object).is_some_and(|m| !m.is_empty());
                if !non_empty(patch.get("tags")) && !non_empty(patch.pointer("/properties/desired"))
                {
                    return Err(HubError::invalid(
                        "updateTwin must change tags or properties.desired",
                    ));
                }
                (Some(patch), None)
            }
            JobType::ScheduleDeviceMethod => {
                let method = request.cloud_to_device_method.clone().ok_or_else(|| {
                    HubError::invalid("cloudToDeviceMethod is required for scheduleDeviceMethod")
                })?;
                validate_request(&method)?;
                (None, Some(method))
            }
            other => {
                return Err(HubError::invalid(format!(
                    "job type `{other}` cannot be scheduled; use scheduleUpdateTwin or scheduleDeviceMethod"
                )));
            }
        };
        let max_secs = request
            .max_execution_time_in_seconds
            .unwrap_or(DEFAULT_MAX_EXECUTION_TIME_SECS);
        if max_secs == 0 || i64::try_from(max_secs).is_err() {
            return Err(HubError::invalid(
                "maxExecutionTimeInSeconds must be a positive number of seconds",
            ));
        }
        if self.jobs.entries.contains_key(id) {
            return Err(HubError::new(
                ErrorCode::JobAlreadyExists,
                format!("A job with ID '{id}' already exists"),
            ));
        }
        if self.jobs.active_ids().len() >= MAX_ACTIVE_JOBS {
            return Err(HubError::new(
                ErrorCode::JobQuotaExceeded,
                format!(
                    "Job quota has been exceeded: at most {MAX_ACTIVE_JOBS} jobs may be scheduled or running"
                ),
            ));
        }
        let created = now_utc();
        let job = JobResponse {
            job_id: id.to_owned(),
            query_condition: Some(condition.to_owned()),
            created_time: Some(created),
            start_time: Some(request.start_time.unwrap_or(created)),
            end_time: None,
            max_execution_time_in_seconds: Some(max_secs),
            job_type: request.job_type.clone(),
            status: JobStatus::Scheduled,
            cloud_to_device_method: method,
            update_twin,
            failure_reason: None,
            status_message: None,
            device_job_statistics: None,
        };
        let record = serde_json::to_string(&job).map_err(HubError::storage)?;
        let evicted = self.jobs.evictions();
        let mut changes: Vec<Change<'_>> = evicted.iter().map(|e| Change::DeleteJob(e)).collect();
        changes.push(Change::PutJob(id, &record));
        self.store.apply(&changes)?;
        for gone in &evicted {
            self.jobs.entries.remove(gone);
        }
        let entry = JobEntry {
            job,
            devices: BTreeMap::new(),
            cancel: Arc::default(),
        };
        let rendered = entry.render();
        self.jobs.entries.insert(id.to_owned(), entry);
        if let Some(wake) = &self.jobs.wake
            && wake.try_send(id.to_owned()).is_err()
        {
            // Cannot happen while the scheduler runs: its queue holds MAX_ACTIVE_JOBS ids.
            tracing::warn!(job = %id, "the job scheduler did not take the job; it starts at the next emulator start");
        }
        Ok(rendered)
    }

    /// `GET /jobs/v2/{id}`: the job with its statistics; 404 `JobNotFound`.
    pub(crate) fn get_job(&self, id: &str) -> Result<JobResponse, HubError> {
        Ok(self.jobs.entry(id)?.render())
    }

    /// `POST /jobs/v2/{id}/cancel`: a scheduled or running job becomes `cancelled`, its
    /// unfinished rows `canceled`, and its runner stops. Cancelling a finished job changes
    /// nothing and answers it as it is. 404 `JobNotFound` for an unknown id.
    pub(crate) fn cancel_job(&mut self, id: &str) -> Result<JobResponse, HubError> {
        let entry = self.jobs.entry(id)?;
        if !entry.is_active() {
            return Ok(entry.render());
        }
        let at = now_utc();
        let mut job = entry.job.clone();
        job.status = JobStatus::Cancelled;
        job.end_time = Some(at);
        let rows: Vec<DeviceJob> = entry
            .devices
            .values()
            .filter(|r| {
                matches!(
                    r.status,
                    DeviceJobStatus::Pending
                        | DeviceJobStatus::Scheduled
                        | DeviceJobStatus::Running
                )
            })
            .map(|r| {
                let mut row = r.clone();
                row.status = DeviceJobStatus::Canceled;
                row.end_time_utc = Some(at);
                row.last_updated_date_time_utc = Some(at);
                row
            })
            .collect();
        self.store_job(&job, &rows)?;
        let entry = self.install_job(job, rows)?;
        entry.cancel.notify_one();
        Ok(entry.render())
    }

    /// `GET /jobs/v2/query`: jobs of `job_type` and `status` (either filter optional), oldest
    /// first.
    pub(crate) fn query_jobs(
        &self,
        job_type: Option<&JobType>,
        status: Option<&JobStatus>,
    ) -> Vec<JobResponse> {
        let mut jobs: Vec<&JobEntry> = self
            .jobs
            .entries
            .values()
            .filter(|e| job_type.is_none_or(|t| &e.job.job_type == t))
            .filter(|e| status.is_none_or(|s| &e.job.status == s))
            .collect();
        jobs.sort_by(|a, b| {
            (a.job.created_time, &a.job.job_id).cmp(&(b.job.created_time, &b.job.job_id))
        });
        jobs.iter().map(|e| e.render()).collect()
    }

    /// The rows of `SELECT * FROM devices.jobs`: every device job, by device id, then job
    /// creation order.
    pub(crate) fn device_job_documents(&self) -> Vec<Value> {
        let mut rows: Vec<(&str, Option<OffsetDateTime>, &DeviceJob)> = self
            .jobs
            .entries
            .values()
            .flat_map(|e| {
                e.devices
                    .values()
                    .map(move |r| (r.device_id.as_str(), e.job.created_time, r))
            })
            .collect();
        rows.sort_by(|a, b| (a.0, a.1, &a.2.job_id).cmp(&(b.0, b.1, &b.2.job_id)));
        rows.iter()
            .filter_map(|(_, _, row)| serde_json::to_value(row).ok())
            .collect()
    }

    /// The start time and cancel signal of an active job; `None` for a finished or unknown
    /// one.
    pub(crate) fn job_plan(&self, id: &str) -> Option<JobPlan> {
        let entry = self.jobs.entries.get(id).filter(|e| e.is_active())?;
        Some(JobPlan {
            start: entry.job.start_time.unwrap_or_else(now_utc),
            cancel: entry.cancel.clone(),
        })
    }

    /// Starts a scheduled job (selects its devices, creates their rows `pending`, status
    /// `running`) or picks up a running one after a restart; returns what is left to do, or
    /// `None` if the job is no longer active.
    pub(crate) fn start_job(&mut self, id: &str) -> Result<Option<JobRun>, HubError> {
        let Some(entry) = self.jobs.entries.get(id).filter(|e| e.is_active()) else {
            return Ok(None);
        };
        let job = entry.job.clone();
        let run = |devices: Vec<String>| {
            let start = job.start_time.max(job.created_time).unwrap_or_else(now_utc);
            let secs =
                i64::try_from(job.max_execution_time_in_seconds.unwrap_or(0)).unwrap_or(i64::MAX);
            JobRun {
                method: job.cloud_to_device_method.clone(),
                devices,
                deadline: start.saturating_add(time::Duration::seconds(secs)),
            }
        };
        if entry.is_running() {
            let left = entry
                .devices
                .values()
                .filter(|r| {
                    matches!(
                        r.status,
                        DeviceJobStatus::Pending | DeviceJobStatus::Running
                    )
                })
                .map(|r| r.device_id.clone())
                .collect();
            return Ok(Some(run(left)));
        }
        let condition = Condition::parse(job.query_condition.as_deref().unwrap_or_default())
            .map_err(|e| HubError::invalid(format!("queryCondition: {e}")))?;
        let at = now_utc();
        let targets: Vec<String> = self
            .twin_documents(false)
            .iter()
            .filter(|twin| condition.matches(twin))
            .filter_map(|twin| {
                twin.get("deviceId")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        let rows: Vec<DeviceJob> = targets
            .iter()
            .map(|device_id| DeviceJob {
                device_id: device_id.clone(),
                job_id: id.to_owned(),
                job_type: job.job_type.clone(),
                status: DeviceJobStatus::Pending,
                start_time_utc: None,
                end_time_utc: None,
                created_date_time_utc: Some(at),
                last_updated_date_time_utc: Some(at),
                outcome: None,
                error: None,
            })
            .collect();
        let mut running = job.clone();
        running.status = JobStatus::Running;
        self.store_job(&running, &rows)?;
        self.install_job(running, rows)?;
        Ok(Some(run(targets)))
    }

    /// Applies a twin job's patch to `devices` (a chunk of its pending rows): every twin write
    /// and every row in one transaction, then the desired patches go to connected devices. A
    /// device deleted since the start fails its row with `DeviceNotFound`. Does nothing if the
    /// job is no longer running.
    pub(crate) fn run_twin_chunk(&mut self, id: &str, devices: &[String]) -> Result<(), HubError> {
        let Some(entry) = self.jobs.entries.get(id).filter(|e| e.is_running()) else {
            return Ok(());
        };
        let patch = entry.job.update_twin.clone().unwrap_or(Value::Null);
        let at = now_utc();
        let mut writes: Vec<TwinWrite> = Vec::with_capacity(devices.len());
        let mut rows = Vec::with_capacity(devices.len());
        for device_id in devices {
            let Some(current) = entry.devices.get(device_id).filter(|r| {
                matches!(
                    r.status,
                    DeviceJobStatus::Pending | DeviceJobStatus::Running
                )
            }) else {
                continue;
            };
            let mut row = current.clone();
            row.start_time_utc = Some(at);
            row.end_time_utc = Some(at);
            row.last_updated_date_time_utc = Some(at);
            match self.prepare_twin_write(device_id, None, &patch, None, false) {
                Ok(write) => {
                    row.status = DeviceJobStatus::Completed;
                    writes.push(write);
                }
                Err(e) => {
                    row.status = DeviceJobStatus::Failed;
                    row.error = Some(DeviceJobError::new(e.code.name(), e.message));
                }
            }
            rows.push(row);
        }
        let row_texts = rows.iter().map(row_json).collect::<Result<Vec<_>, _>>()?;
        let mut changes: Vec<Change<'_>> = writes.iter().map(|w| Change::Put(&w.record)).collect();
        changes.extend(
            rows.iter()
                .zip(&row_texts)
                .map(|(r, text)| Change::PutDeviceJob(id, &r.device_id, text)),
        );
        self.store.apply(&changes)?;
        for write in writes {
            let device_id = write.record.device_id.clone();
            self.finish_twin_write(write);
            // A job's tags may bring the twin into (or out of) a configuration's target.
            self.reconcile_twin(&device_id, None);
        }
        if let Some(entry) = self.jobs.entries.get_mut(id) {
            for row in rows {
                entry.devices.insert(row.device_id.clone(), row);
            }
        }
        Ok(())
    }

    /// Marks a method job's row `running` before its call; returns the call, or `None` if the
    /// job is no longer running or the row was already done.
    pub(crate) fn begin_device_job(
        &mut self,
        id: &str,
        device_id: &str,
    ) -> Result<Option<DirectMethodRequest>, HubError> {
        let Some(entry) = self.jobs.entries.get(id).filter(|e| e.is_running()) else {
            return Ok(None);
        };
        let (Some(method), Some(current)) = (
            entry.job.cloud_to_device_method.clone(),
            entry.devices.get(device_id).filter(|r| {
                matches!(
                    r.status,
                    DeviceJobStatus::Pending | DeviceJobStatus::Running
                )
            }),
        ) else {
            return Ok(None);
        };
        let at = now_utc();
        let mut row = current.clone();
        row.status = DeviceJobStatus::Running;
        row.start_time_utc = Some(at);
        row.last_updated_date_time_utc = Some(at);
        self.store_rows(id, std::slice::from_ref(&row))?;
        self.install_rows(id, vec![row]);
        Ok(Some(method))
    }

    /// Records a method job's answer from `device_id`: `completed` with the device's status
    /// and payload, or `failed` with the hub's error. Ignored if the job stopped meanwhile.
    pub(crate) fn end_device_job(
        &mut self,
        id: &str,
        device_id: &str,
        result: Result<DirectMethodResponse, HubError>,
    ) -> Result<(), HubError> {
        let Some(current) = self
            .jobs
            .entries
            .get(id)
            .filter(|e| e.is_running())
            .and_then(|e| e.devices.get(device_id))
            .filter(|r| r.status == DeviceJobStatus::Running)
        else {
            return Ok(());
        };
        let at = now_utc();
        let mut row = current.clone();
        row.end_time_utc = Some(at);
        row.last_updated_date_time_utc = Some(at);
        match result {
            Ok(response) => {
                row.status = DeviceJobStatus::Completed;
                row.outcome = Some(DeviceJobOutcome {
                    device_method_response: Some(response),
                });
            }
            Err(e) => {
                row.status = DeviceJobStatus::Failed;
                row.error = Some(DeviceJobError::new(e.code.name(), e.message));
            }
        }
        self.store_rows(id, std::slice::from_ref(&row))?;
        self.install_rows(id, vec![row]);
        Ok(())
    }

    /// Ends a running job as `completed`. With `timed_out` (its maximum execution time passed)
    /// the rows still pending or running fail with [`TIMED_OUT_CODE`].
    pub(crate) fn finish_job(&mut self, id: &str, timed_out: bool) -> Result<(), HubError> {
        let Some(entry) = self.jobs.entries.get(id).filter(|e| e.is_running()) else {
            return Ok(());
        };
        let at = now_utc();
        let mut job = entry.job.clone();
        job.status = JobStatus::Completed;
        job.end_time = Some(at);
        if timed_out {
            job.status_message = Some("the job reached its maxExecutionTimeInSeconds".into());
        }
        let rows: Vec<DeviceJob> = entry
            .devices
            .values()
            .filter(|r| matches!(r.status, DeviceJobStatus::Pending | DeviceJobStatus::Running))
            .map(|r| {
                let mut row = r.clone();
                row.status = DeviceJobStatus::Failed;
                row.end_time_utc = Some(at);
                row.last_updated_date_time_utc = Some(at);
                row.error = Some(DeviceJobError::new(
                    TIMED_OUT_CODE,
                    "The job reached its maxExecutionTimeInSeconds before this device was processed.",
                ));
                row
            })
            .collect();
        self.store_job(&job, &rows)?;
        self.install_job(job, rows)?;
        Ok(())
    }

    /// Stores a job record and some of its rows in one transaction.
    fn store_job(&mut self, job: &JobResponse, rows: &[DeviceJob]) -> Result<(), HubError> {
        let record = serde_json::to_string(job).map_err(HubError::storage)?;
        let texts = rows.iter().map(row_json).collect::<Result<Vec<_>, _>>()?;
        let mut changes = vec![Change::PutJob(&job.job_id, &record)];
        changes.extend(
            rows.iter()
                .zip(&texts)
                .map(|(r, text)| Change::PutDeviceJob(&job.job_id, &r.device_id, text)),
        );
        self.store.apply(&changes)?;
        Ok(())
    }

    /// Stores rows of a job in one transaction.
    fn store_rows(&mut self, id: &str, rows: &[DeviceJob]) -> Result<(), HubError> {
        let texts = rows.iter().map(row_json).collect::<Result<Vec<_>, _>>()?;
        let changes: Vec<Change<'_>> = rows
            .iter()
            .zip(&texts)
            .map(|(r, text)| Change::PutDeviceJob(id, &r.device_id, text))
            .collect();
        self.store.apply(&changes)?;
        Ok(())
    }

    /// Installs a stored job record and rows in memory.
    fn install_job(
        &mut self,
        job: JobResponse,
        rows: Vec<DeviceJob>,
    ) -> Result<&JobEntry, HubError> {
        let id = job.job_id.clone();
        let entry = self
            .jobs
            .entries
            .get_mut(&id)
            .ok_or_else(|| job_not_found(&id))?;
        entry.job = job;
        for row in rows {
            entry.devices.insert(row.device_id.clone(), row);
        }
        Ok(entry)
    }

    /// Installs stored rows in memory.
    fn install_rows(&mut self, id: &str, rows: Vec<DeviceJob>) {
        if let Some(entry) = self.jobs.entries.get_mut(id) {
            for row in rows {
                entry.devices.insert(row.device_id.clone(), row);
            }
        }
    }
}
