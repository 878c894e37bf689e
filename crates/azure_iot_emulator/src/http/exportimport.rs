//! Import/export devices jobs: `POST /jobs/create`, `GET /jobs`, `GET /jobs/{id}`,
//! `DELETE /jobs/{id}` (RegistryWrite to create and cancel, RegistryRead to read), and
//! `POST /$emulator/blob/containers/{name}/sas`, which mints the container SAS URIs these
//! jobs take (the emulator's blob account key is its own; RegistryWrite).
//!
//! A job's containers must be on the emulator's own blob endpoint, with a SAS granting what
//! the job needs (export: write on the output container; import: read on the input container
//! and write on the output container, for `importErrors.log`); anything else is refused with
//! 400 before the job exists. The job then runs on a task of its own: `enqueued`, `running`,
//! then `completed` or `failed` with a `failureReason`; the registry work happens in state
//! calls (`hub::exportimport`), the blob reads and writes here. `identityBased` storage
//! authentication is 501 (the emulator has no managed identities).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use azure_iot_protocol::export_import::{
    DEFAULT_CONFIGURATIONS_BLOB, DEFAULT_DEVICES_BLOB, ExportImportJob, IMPORT_ERRORS_BLOB,
};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use super::{ApiError, AppState, Body, json_ok};
use crate::blob::{BlobEndpoint, BlobError, Permission, valid_container_name};
use crate::hub::Hub;
use crate::hub::error::ErrorCode;
use crate::hub::policy::Rights;

/// The largest devices or configurations blob an import reads.
const MAX_IMPORT_BYTES: u64 = 256 * 1024 * 1024;

/// How long a minted container SAS is valid.
const SAS_LIFETIME: time::Duration = time::Duration::hours(24);

/// A job container: its name and SAS query.
struct Container {
    name: String,
    query: String,
}

/// Parses a container URI and checks that it is on `endpoint` and that its SAS grants
/// `permission` on `blob`.
fn container(
    endpoint: &BlobEndpoint,
    member: &str,
    uri: Option<&str>,
    blob: &str,
    permission: Permission,
) -> Result<Container, ApiError> {
    let uri = uri.ok_or_else(|| ApiError::invalid(format!("{member} is required")))?;
    let parsed: http::Uri = uri
        .parse()
        .map_err(|_| ApiError::invalid(format!("{member} is not a URI")))?;
    let host = parsed.authority().map(|a| a.as_str()).unwrap_or_default();
    if parsed.scheme_str() != Some("https") || !host.eq_ignore_ascii_case(&endpoint.host) {
        return Err(ApiError::invalid(format!(
            "{member} must be a container on the emulator's blob endpoint https://{}/",
            endpoint.host
        )));
    }
    let name = parsed.path().trim_matches('/').to_owned();
    if !valid_container_name(&name) {
        return Err(ApiError::invalid(format!(
            "{member} does not name a valid container"
        )));
    }
    let query = parsed.query().unwrap_or_default().to_owned();
    endpoint
        .signer
        .verify(
            Some(&query),
            &name,
            blob,
            permission,
            OffsetDateTime::now_utc(),
        )
        .map_err(|e| ApiError::invalid(format!("{member}: {}", e.message)))?;
    Ok(Container { name, query })
}

/// The blob endpoint, or 501 when the emulator runs without one.
fn endpoint(app: &AppState) -> Result<Arc<BlobEndpoint>, ApiError> {
    app.blob.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotImplemented,
            "import/export jobs need the emulator's blob endpoint, which is off",
        )
    })
}

fn job_json(job: &ExportImportJob) -> Result<Value, ApiError> {
    serde_json::to_value(job)
        .map_err(|e| ApiError::new(ErrorCode::ServerError, format!("encoding the job: {e}")))
}

/// `POST /jobs/create`: checks the job, records it `enqueued`, starts it, answers it.
pub(crate) async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    let job: ExportImportJob = body.json().await?;
    let endpoint = endpoint(&app)?;
    if job
        .storage_authentication_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("identityBased"))
    {
        return Err(ApiError::new(
            ErrorCode::NotImplemented,
            "identityBased storage authentication is not supported by the emulator; use keyBased (a SAS in the URI)",
        ));
    }
    let devices_blob = |name: &Option<String>| {
        name.clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_DEVICES_BLOB.to_owned())
    };
    let plan = match job.job_type.to_ascii_lowercase().as_str() {
        "export" => {
            let blob = devices_blob(&job.output_blob_name);
            let out = container(
                &endpoint,
                "outputBlobContainerUri",
                job.output_blob_container_uri.as_deref(),
                &blob,
                Permission::Write,
            )?;
            Plan::Export { out, blob }
        }
        "import" => {
            let blob = devices_blob(&job.input_blob_name);
            let input = container(
                &endpoint,
                "inputBlobContainerUri",
                job.input_blob_container_uri.as_deref(),
                &blob,
                Permission::Read,
            )?;
            let out = container(
                &endpoint,
                "outputBlobContainerUri",
                job.output_blob_container_uri.as_deref(),
                IMPORT_ERRORS_BLOB,
                Permission::Write,
            )?;
            Plan::Import { input, out, blob }
        }
        other => {
            return Err(ApiError::invalid(format!(
                "job type `{other}` is not export or import (scheduled jobs use /jobs/v2)"
            )));
        }
    };
    let configurations_blob = job
        .configurations_blob_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_CONFIGURATIONS_BLOB.to_owned());
    let record = app.hub.call(move |s| s.add_export_job(job)).await??;
    let id = record.job_id.clone().unwrap_or_default();
    let run = Run {
        hub: app.hub.clone(),
        endpoint,
        exclude_keys: record.exclude_keys_in_export,
        configurations: record.include_configurations.then_some(configurations_blob),
    };
    tokio::spawn(async move {
        let hub = run.hub.clone();
        let job_id = id.clone();
        let _ = hub
            .call(move |s| s.set_export_job_status(&job_id, "running", None))
            .await;
        let outcome = run.execute(plan).await;
        let (status, failure) = match outcome {
            Ok(()) => ("completed", None),
            Err(reason) => ("failed", Some(reason)),
        };
        let _ = hub
            .call(move |s| s.set_export_job_status(&id, status, failure))
            .await;
    });
    Ok(json_ok(job_json(&record)?))
}

/// What a job does.
enum Plan {
    Export {
        out: Container,
        blob: String,
    },
    Import {
        input: Container,
        out: Container,
        blob: String,
    },
}

/// A running job's means.
struct Run {
    hub: Hub,
    endpoint: Arc<BlobEndpoint>,
    exclude_keys: bool,
    /// The configurations blob, when the job includes configurations.
    configurations: Option<String>,
}

impl Run {
    /// Runs the job; the error is the job's `failureReason`.
    async fn execute(&self, plan: Plan) -> Result<(), String> {
        match plan {
            Plan::Export { out, blob } => {
                let exclude = self.exclude_keys;
                let lines = self
                    .hub
                    .call(move |s| s.export_lines(exclude))
                    .await
                    .map_err(|e| e.to_string())?;
                self.write(&out, &blob, &lines).await?;
                if let Some(name) = &self.configurations {
                    let lines = self
                        .hub
                        .call(|s| s.export_configuration_lines())
                        .await
                        .map_err(|e| e.to_string())?;
                    self.write(&out, name, &lines).await?;
                }
                Ok(())
            }
            Plan::Import { input, out, blob } => {
                let text = self.read(&input, &blob).await?;
                let errors = self
                    .hub
                    .call(move |s| s.import_lines(&text))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.message)?;
                let mut errors = errors;
                if let Some(name) = &self.configurations {
                    let text = self.read(&input, name).await?;
                    let config_errors = self
                        .hub
                        .call(move |s| s.import_configuration_lines(&text))
                        .await
                        .map_err(|e| e.to_string())?;
                    errors.extend(config_errors);
                }
                let failed = errors.len();
                if failed > 0 {
                    self.write(&out, IMPORT_ERRORS_BLOB, &errors).await?;
                    return Err(format!(
                        "{failed} line(s) could not be imported; see {IMPORT_ERRORS_BLOB} in the output container"
                    ));
                }
                Ok(())
            }
        }
    }

    /// Writes `lines` (newline-terminated) as the blob `name`, checking the SAS still allows it.
    async fn write(
        &self,
        container: &Container,
        name: &str,
        lines: &[String],
    ) -> Result<(), String> {
        self.check(container, name, Permission::Write)?;
        let mut body = lines.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        self.endpoint
            .files
            .put_blob(
                &container.name,
                name,
                Some("text/plain".into()),
                axum::body::Body::from(body),
            )
            .await
            .map(drop)
            .map_err(|e| blob_failure(name, &e))
    }

    /// Reads the blob `name` as text (at most [`MAX_IMPORT_BYTES`]).
    async fn read(&self, container: &Container, name: &str) -> Result<String, String> {
        self.check(container, name, Permission::Read)?;
        let (file, _) = self
            .endpoint
            .files
            .open_blob(&container.name, name)
            .await
            .map_err(|e| blob_failure(name, &e))?;
        let mut text = String::new();
        file.take(MAX_IMPORT_BYTES + 1)
            .read_to_string(&mut text)
            .await
            .map_err(|e| format!("{name} is not UTF-8 text: {e}"))?;
        if text.len() as u64 > MAX_IMPORT_BYTES {
            return Err(format!("{name} is larger than {MAX_IMPORT_BYTES} bytes"));
        }
        Ok(text)
    }

    /// The SAS may have expired since the job was accepted.
    fn check(
        &self,
        container: &Container,
        name: &str,
        permission: Permission,
    ) -> Result<(), String> {
        self.endpoint
            .signer
            .verify(
                Some(&container.query),
                &container.name,
                name,
                permission,
                OffsetDateTime::now_utc(),
            )
            .map_err(|e| format!("container `{}`: {}", container.name, e.message))
    }
}

fn blob_failure(name: &str, e: &BlobError) -> String {
    format!("blob {name}: {} ({})", e.message, e.code)
}

/// `GET /jobs`: every recorded import/export job.
pub(crate) async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    let jobs = app.hub.call(|s| s.list_export_jobs()).await?;
    let jobs = jobs.iter().map(job_json).collect::<Result<Vec<_>, _>>()?;
    Ok(json_ok(Value::Array(jobs)))
}

/// `GET /jobs/{id}`.
pub(crate) async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    let job = app.hub.call(move |s| s.get_export_job(&id)).await??;
    Ok(json_ok(job_json(&job)?))
}

/// `DELETE /jobs/{id}`: cancels a job that has not ended; 204.
pub(crate) async fn cancel(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    app.hub.call(move |s| s.cancel_export_job(&id)).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /$emulator/blob/containers/{name}/sas`: `{"containerUri": "https://…/{name}?…"}`
/// granting read, write, delete and list for a day.
pub(crate) async fn container_sas(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    let endpoint = endpoint(&app)?;
    if !valid_container_name(&name) {
        return Err(ApiError::invalid(
            "a container name is 3 to 63 lowercase letters, digits and single hyphens",
        ));
    }
    let uri = endpoint.container_sas_uri(&name, "rwdl", OffsetDateTime::now_utc() + SAS_LIFETIME);
    Ok(json_ok(json!({ "containerUri": uri })))
}
