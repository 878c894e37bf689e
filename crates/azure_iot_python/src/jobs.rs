//! `NativeJobManager`: the Rust half of `IoTHubJobManager` — import/export jobs and jobs v2
//! (scheduled twin updates and direct methods) over [`azure_iot_service::ServiceClient`]. Job
//! requests cross as the hub's JSON, read into the Rust client's models before anything is
//! sent; answers return as JSON for the Python models.

use std::sync::Arc;

use azure_iot_service::{ExportImportJob, JobRequest, JobStatus, JobType, ServiceClient};
use pyo3::prelude::*;

use crate::service::{Page, call_json, call_unit, connect_rest, from_json, next_page};

/// The Rust half of `IoTHubJobManager`.
#[pyclass(module = "azure_iot_rs._native", frozen)]
pub(crate) struct NativeJobManager {
    client: Arc<ServiceClient>,
}

#[pymethods]
impl NativeJobManager {
    /// A job manager from a service connection string, with the registry manager's options.
    #[new]
    #[pyo3(signature = (connection_string, server_verification_cert=None, https_port=None))]
    fn new(
        connection_string: &str,
        server_verification_cert: Option<String>,
        https_port: Option<u16>,
    ) -> PyResult<Self> {
        Ok(Self {
            client: connect_rest(connection_string, server_verification_cert, https_port)?,
        })
    }

    /// Starts the import or export job `job_json` (the hub's `JobProperties` JSON); returns
    /// the job as the hub answered it, as JSON.
    fn create_import_export_job(&self, py: Python<'_>, job_json: &str) -> PyResult<String> {
        let job: ExportImportJob = from_json("job_properties", job_json)?;
        let client = self.client.clone();
        call_json(
            py,
            async move { client.create_export_import_job(&job).await },
        )
    }

    /// The hub's recent import/export jobs as a JSON array.
    fn get_import_export_jobs(&self, py: Python<'_>) -> PyResult<String> {
        let client = self.client.clone();
        call_json(py, async move { client.list_export_import_jobs().await })
    }

    /// The import/export job `job_id` as JSON.
    fn get_import_export_job(&self, py: Python<'_>, job_id: String) -> PyResult<String> {
        let client = self.client.clone();
        call_json(
            py,
            async move { client.get_export_import_job(&job_id).await },
        )
    }

    /// Cancels the import/export job `job_id`.
    fn cancel_import_export_job(&self, py: Python<'_>, job_id: String) -> PyResult<()> {
        let client = self.client.clone();
        call_unit(
            py,
            async move { client.cancel_export_import_job(&job_id).await },
        )
    }

    /// Schedules the job `request_json` (the hub's `JobRequest` JSON, whose `jobId` the Python
    /// side set); returns the hub's `JobResponse` as JSON.
    fn create_scheduled_job(&self, py: Python<'_>, request_json: &str) -> PyResult<String> {
        let request: JobRequest = from_json("job_request", request_json)?;
        let client = self.client.clone();
        call_json(py, async move { client.create_job(&request).await })
    }

    /// The job `job_id` as JSON.
    fn get_scheduled_job(&self, py: Python<'_>, job_id: String) -> PyResult<String> {
        let client = self.client.clone();
        call_json(py, async move { client.get_job(&job_id).await })
    }

    /// Cancels the job `job_id`; returns it as JSON.
    fn cancel_scheduled_job(&self, py: Python<'_>, job_id: String) -> PyResult<String> {
        let client = self.client.clone();
        call_json(py, async move { client.cancel_job(&job_id).await })
    }

    /// The first page of jobs of `job_type` and/or `job_status` (any case, as the hub reads
    /// them): `(item type, continuation token, jobs as a JSON array)`.
    #[pyo3(signature = (job_type=None, job_status=None))]
    fn query_scheduled_jobs(
        &self,
        py: Python<'_>,
        job_type: Option<String>,
        job_status: Option<String>,
    ) -> PyResult<Page> {
        let query = self.client.query_jobs(
            job_type.as_deref().map(JobType::parse),
            job_status.as_deref().map(JobStatus::parse),
        );
        next_page(py, query)
    }
}
