//! Import/export devices jobs on [`ServiceClient`]: start one, read it, list them, cancel it.
//!
//! A job reads and writes newline-delimited `ExportImportDevice` JSON in a blob container the
//! caller owns, named by a container URI with a SAS (`keyBased` storage authentication). The
//! hub runs the job in the background: poll [`ServiceClient::get_export_import_job`] until
//! [`ExportImportJob::is_finished`]. Against the emulator, the container must be on its blob
//! endpoint (`azure-iot hub container-sas` mints a URI).

use azure_iot_core::encoding::encode_component;
use azure_iot_protocol::export_import::ExportImportJob;
use reqwest::Method;

use crate::client::ServiceClient;
use crate::error::{Error, Result};
use crate::http::Request;

/// `/jobs/{id}`, refusing an empty id.
fn job_path(id: &str) -> Result<String> {
    if id.is_empty() {
        return Err(Error::invalid("a job id is required"));
    }
    Ok(format!("/jobs/{}", encode_component(id)))
}

impl ServiceClient {
    /// Starts an import or export job; the answer carries its id and `enqueued` status.
    /// A job without the container URI its type needs fails before anything is sent.
    pub async fn create_export_import_job(&self, job: &ExportImportJob) -> Result<ExportImportJob> {
        let needs = |uri: &Option<String>, what: &str| {
            if uri.as_deref().is_none_or(str::is_empty) {
                Err(Error::invalid(format!(
                    "an {} job needs {what}",
                    job.job_type
                )))
            } else {
                Ok(())
            }
        };
        match job.job_type.as_str() {
            "export" => needs(&job.output_blob_container_uri, "outputBlobContainerUri")?,
            "import" => {
                needs(&job.input_blob_container_uri, "inputBlobContainerUri")?;
                needs(&job.output_blob_container_uri, "outputBlobContainerUri")?;
            }
            other => {
                return Err(Error::invalid(format!(
                    "job type `{other}` is not export or import"
                )));
            }
        }
        // Not repeated once it reached the hub: a retry would start a second job.
        self.send_json(
            Request::new(Method::POST, "/jobs/create")
                .idempotent(false)
                .json(job)?,
        )
        .await
    }

    /// Exports every identity (with twins and modules) into the container at
    /// `output_container_uri` (`devices.txt`), without keys if `exclude_keys`.
    pub async fn export_devices(
        &self,
        output_container_uri: &str,
        exclude_keys: bool,
    ) -> Result<ExportImportJob> {
        self.create_export_import_job(&ExportImportJob::export(output_container_uri, exclude_keys))
            .await
    }

    /// Imports `devices.txt` from `input_container_uri`; lines that fail are written to
    /// `importErrors.log` in `output_container_uri`.
    pub async fn import_devices(
        &self,
        input_container_uri: &str,
        output_container_uri: &str,
    ) -> Result<ExportImportJob> {
        self.create_export_import_job(&ExportImportJob::import(
            input_container_uri,
            output_container_uri,
        ))
        .await
    }

    /// The import/export job `id` as it is now.
    pub async fn get_export_import_job(&self, id: &str) -> Result<ExportImportJob> {
        self.send_json(Request::new(Method::GET, job_path(id)?))
            .await
    }

    /// The hub's recent import/export jobs.
    pub async fn list_export_import_jobs(&self) -> Result<Vec<ExportImportJob>> {
        self.send_json(Request::new(Method::GET, "/jobs")).await
    }

    /// Cancels the import/export job `id` if it has not ended.
    pub async fn cancel_export_import_job(&self, id: &str) -> Result<()> {
        self.send(Request::new(Method::DELETE, job_path(id)?))
            .await
            .map(drop)
    }
}
