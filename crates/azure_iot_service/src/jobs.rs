//! Jobs v2: twin updates and direct methods scheduled on the devices a query condition selects
//! (`/jobs/v2/...`), and their per-device rows (`SELECT * FROM devices.jobs`).
//!
//! The bodies are `azure_iot_protocol::jobs`, the types the emulator serves them with. Bad
//! input (a job id outside the hub's rule, an empty condition, a twin patch with nothing to
//! change, a method timeout out of range, a zero maximum execution time) fails before anything
//! is sent. Scheduling is not repeated after the hub may have acted on it (a second `PUT` of
//! the same id is a conflict); reads and cancel are.

use std::time::Duration;

use azure_iot_core::method::DirectMethodRequest;
use azure_iot_protocol::jobs::{
    DeviceJob, JobRequest, JobResponse, JobStatus, JobType, validate_job_id,
};
use reqwest::Method;
use time::OffsetDateTime;

use crate::client::{ServiceClient, TwinPatch, check_method};
use crate::error::{Error, ErrorKind, Result};
use crate::http::Request;
use crate::query::Query;

/// When a scheduled job starts and how long it may run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobSchedule {
    /// The start time; `None` starts the job now.
    pub start: Option<OffsetDateTime>,
    /// The maximum execution time (whole seconds); `None` leaves the hub's default (one hour
    /// on the emulator, as the Node SDK sends).
    pub max_execution_time: Option<Duration>,
}

impl JobSchedule {
    /// Starts now with the default maximum execution time.
    pub fn now() -> Self {
        Self::default()
    }

    /// Starts at `start`.
    pub fn at(start: OffsetDateTime) -> Self {
        Self {
            start: Some(start),
            max_execution_time: None,
        }
    }

    /// Sets the maximum execution time.
    pub fn max_execution_time(mut self, limit: Duration) -> Self {
        self.max_execution_time = Some(limit);
        self
    }
}

/// The path of a job, its id checked and percent-encoded.
fn job_path(job_id: &str) -> Result<String> {
    validate_job_id(job_id)
        .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, format!("job id: {e}"), e))?;
    // Letters, digits and '-' only: nothing to encode.
    Ok(format!("/jobs/v2/{job_id}"))
}

impl ServiceClient {
    /// Schedules a twin update (tags and/or desired properties) on every device
    /// `query_condition` selects (the part after `WHERE`, e.g. `tags.floor = 3` or
    /// `deviceId IN ['a', 'b']`).
    pub async fn schedule_twin_update(
        &self,
        job_id: &str,
        query_condition: &str,
        patch: &TwinPatch,
        schedule: JobSchedule,
    ) -> Result<JobResponse> {
        let wire = patch.to_wire();
        if wire.as_object().is_none_or(|m| m.is_empty()) {
            return Err(Error::invalid("the twin patch changes nothing"));
        }
        let request = JobRequest::update_twin(job_id, query_condition, wire);
        self.create_job(&with_schedule(request, schedule)?).await
    }

    /// Schedules a direct method call on every device `query_condition` selects.
    pub async fn schedule_device_method(
        &self,
        job_id: &str,
        query_condition: &str,
        method: &DirectMethodRequest,
        schedule: JobSchedule,
    ) -> Result<JobResponse> {
        check_method(method)?;
        let request = JobRequest::device_method(job_id, query_condition, method.clone());
        self.create_job(&with_schedule(request, schedule)?).await
    }

    /// Schedules a job described in full (`PUT /jobs/v2/{jobId}`).
    ///
    /// Fails with [`ErrorKind::AlreadyExists`] if the id is taken, [`ErrorKind::Forbidden`]
    /// when the hub has its maximum of active jobs, [`ErrorKind::BadRequest`] for a job the
    /// hub refuses (a condition that does not parse, ...).
    pub async fn create_job(&self, request: &JobRequest) -> Result<JobResponse> {
        let path = job_path(&request.job_id)?;
        if request.query_condition.trim().is_empty() {
            return Err(Error::invalid("the query condition is empty"));
        }
        if request.max_execution_time_in_seconds == Some(0) {
            return Err(Error::invalid(
                "the maximum execution time must be at least 1 s",
            ));
        }
        if let Some(method) = &request.cloud_to_device_method {
            check_method(method)?;
        }
        // A second PUT of the same id is a conflict: not repeated unless it never got there.
        self.send_json(
            Request::new(Method::PUT, path)
                .json(request)?
                .idempotent(false),
        )
        .await
    }

    /// The job with its device statistics; [`ErrorKind::NotFound`] for an unknown id.
    pub async fn get_job(&self, job_id: &str) -> Result<JobResponse> {
        self.send_json(Request::new(Method::GET, job_path(job_id)?))
            .await
    }

    /// Cancels a scheduled or running job; a finished one is returned as it is.
    pub async fn cancel_job(&self, job_id: &str) -> Result<JobResponse> {
        let path = format!("{}/cancel", job_path(job_id)?);
        // Cancelling twice is cancelling once.
        self.send_json(Request::new(Method::POST, path).idempotent(true))
            .await
    }

    /// Jobs, optionally of one type and/or status, page by page (`GET /jobs/v2/query`).
    pub fn query_jobs(
        &self,
        job_type: Option<JobType>,
        status: Option<JobStatus>,
    ) -> Query<JobResponse> {
        let mut filters = Vec::new();
        if let Some(t) = job_type {
            filters.push(("jobType", t.as_str().to_owned()));
        }
        if let Some(s) = status {
            filters.push(("jobStatus", s.as_str().to_owned()));
        }
        Query::get(self.pipeline(), "/jobs/v2/query", filters)
    }

    /// Per-device job rows: `sql` is a `SELECT * FROM devices.jobs [WHERE ...]` query, e.g.
    /// `SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'job-1'`.
    pub fn query_device_jobs(&self, sql: impl Into<String>) -> Query<DeviceJob> {
        Query::new(self.pipeline(), "/devices/query", sql)
    }
}

/// Applies `schedule` to a request, refusing a zero maximum execution time.
fn with_schedule(mut request: JobRequest, schedule: JobSchedule) -> Result<JobRequest> {
    if let Some(start) = schedule.start {
        request = request.start_at(start);
    }
    if let Some(limit) = schedule.max_execution_time {
        let secs = limit.as_secs();
        if secs == 0 {
            return Err(Error::invalid(
                "the maximum execution time must be at least 1 s",
            ));
        }
        request = request.max_execution_time(secs);
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_paths_check_ids() {
        assert_eq!(job_path("job-1").unwrap(), "/jobs/v2/job-1");
        for bad in ["", "a/b", "a b", &"x".repeat(65)] {
            assert_eq!(
                job_path(bad).unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
        let zero = with_schedule(
            JobRequest::update_twin("j", "true", serde_json::json!({})),
            JobSchedule::now().max_execution_time(Duration::from_millis(10)),
        );
        assert_eq!(zero.unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
}
