//! File upload, the hub's two steps around the device's upload to the blob endpoint.
//!
//! * `POST /devices/{id}/files` (`/files/` from the C SDK), body `{"blobName": "…"}`: 200
//!   with `correlationId`, `hostName` (the blob endpoint, port included; or the configured
//!   storage account's blob endpoint without `https://`, ADR 25), `containerName`,
//!   `blobName` (`{deviceId}/{name}`) and `sasToken` (`?sv=…`, read and write on that blob
//!   for the hub's SAS lifetime; create and write for a storage account). Every SDK then uploads to
//!   `https://{hostName}/{containerName}/{blobName}{sasToken}`.
//! * `POST /devices/{id}/files/notifications[/{correlationId}]` (`/notifications/` from C),
//!   body `{"correlationId", "isSuccess", "statusCode", "statusDescription"}` (Node leaves the
//!   id out of the body and puts it in the path): 204. A successful upload, when
//!   notifications are on, becomes a file-upload notification for the service. An unknown
//!   correlation id is 400.
//!
//! Devices only (modules cannot upload files on IoT Hub); the device's SAS token or client
//! certificate authorizes both steps.

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::authenticate;
use crate::blob::BlobEndpoint;
use crate::http::{ApiError, AppState, Body, Peer, json_ok};
use crate::hub::error::ErrorCode;
use azure_iot_core::datetime::format_timestamp;
use azure_iot_protocol::Identity;

#[derive(Deserialize)]
struct SasRequest {
    #[serde(rename = "blobName")]
    blob_name: String,
}

#[derive(Deserialize)]
struct Completion {
    #[serde(rename = "correlationId", default)]
    correlation_id: Option<String>,
    #[serde(rename = "isSuccess")]
    is_success: bool,
    #[serde(rename = "statusCode", default)]
    status_code: Option<serde_json::Value>,
    #[serde(rename = "statusDescription", default)]
    status_description: Option<String>,
}

fn endpoint(app: &AppState) -> Result<&BlobEndpoint, ApiError> {
    app.blob.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotImplemented,
            "file upload needs the emulator's blob endpoint, which is not running",
        )
    })
}

/// `POST /devices/{id}/files`: a SAS URI for a new blob.
pub(crate) async fn create_upload(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(device_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let identity = Identity::device(device_id);
    authenticate(&app, &headers, &peer, &identity).await?;
    let endpoint = endpoint(&app)?;
    let request: SasRequest = body.json().await?;
    let device = identity.device_id().to_owned();
    let (correlation_id, blob_name, ttl) = app
        .hub
        .call(move |s| s.start_file_upload(&device, &request.blob_name))
        .await??;
    let grant = endpoint.upload_grant(&blob_name, OffsetDateTime::now_utc() + ttl);
    Ok(json_ok(json!({
        "correlationId": correlation_id,
        "hostName": grant.host,
        "containerName": grant.container,
        "blobName": blob_name,
        "sasToken": grant.sas,
    })))
}

/// `POST /devices/{id}/files/notifications` (correlation id in the body).
pub(crate) async fn complete_upload(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(device_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    complete(&app, &peer, device_id, None, &headers, body).await
}

/// `POST /devices/{id}/files/notifications/{correlationId}`.
pub(crate) async fn complete_upload_named(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path((device_id, correlation_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    complete(&app, &peer, device_id, Some(correlation_id), &headers, body).await
}

async fn complete(
    app: &AppState,
    peer: &Peer,
    device_id: String,
    from_path: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let identity = Identity::device(device_id);
    authenticate(app, headers, peer, &identity).await?;
    let endpoint = endpoint(app)?;
    let completion: Completion = body.json().await?;
    let Some(correlation_id) = from_path
        .filter(|c| !c.is_empty())
        .or(completion.correlation_id)
    else {
        return Err(ApiError::invalid(
            "the notification needs a correlationId (in the body or the path)",
        ));
    };
    let device = identity.device_id().to_owned();
    let (upload, notify) = app
        .hub
        .call(move |s| s.end_file_upload(&device, &correlation_id))
        .await??;
    tracing::debug!(
        device = %identity,
        blob = %upload.blob_name,
        success = completion.is_success,
        status = ?completion.status_code,
        description = completion.status_description.as_deref().unwrap_or_default(),
        "file upload ended"
    );
    if completion.is_success && notify {
        let now = OffsetDateTime::now_utc();
        let (size, updated) = match endpoint.uploaded(&upload.blob_name).await {
            Some(found) => found,
            None => {
                tracing::warn!(blob = %upload.blob_name, "a device reported an upload whose blob does not exist; notified with size 0");
                (0, now)
            }
        };
        let notification = json!({
            "deviceId": upload.device_id,
            "blobUri": endpoint.upload_uri(&upload.blob_name),
            "blobName": upload.blob_name,
            "lastUpdatedTime": format_timestamp(updated),
            "blobSizeInBytes": size,
            "enqueuedTimeUtc": format_timestamp(now),
        });
        app.hub
            .call(move |s| s.notify_file_uploaded(notification))
            .await??;
    }
    Ok(StatusCode::NO_CONTENT)
}
