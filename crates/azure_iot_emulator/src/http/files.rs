//! Uploaded files, for `azure-iot hub files` and scripts (emulator-specific; ServiceConnect).
//!
//! * `GET /$emulator/files`: a JSON array of `{"name", "size", "lastModified", "uri"}`,
//!   by name (names are `{deviceId}/{file}`).
//! * `GET /$emulator/files/{name}`: the file's bytes, streamed from disk.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};
use serde_json::{Value, json};

use super::{ApiError, AppState, json_ok};
use crate::blob::{BlobEndpoint, BlobError, CONTAINER, file_body};
use crate::hub::error::ErrorCode;
use crate::hub::policy::Rights;
use azure_iot_core::datetime::format_timestamp;

fn endpoint(app: &AppState) -> Result<&BlobEndpoint, ApiError> {
    app.blob.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotImplemented,
            "the blob endpoint is not running",
        )
    })
}

fn blob_error(e: BlobError) -> ApiError {
    let code = if e.status == 404 {
        ErrorCode::EndpointNotFound
    } else {
        ErrorCode::ServerError
    };
    ApiError::new(code, e.message)
}

/// `GET /$emulator/files`.
pub(crate) async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let endpoint = endpoint(&app)?;
    let files = endpoint.files.list(CONTAINER).await.map_err(blob_error)?;
    Ok(json_ok(Value::Array(
        files
            .into_iter()
            .map(|f| {
                json!({
                    "uri": endpoint.blob_uri(&f.name),
                    "name": f.name,
                    "size": f.size,
                    "lastModified": format_timestamp(f.last_modified),
                })
            })
            .collect(),
    )))
}

/// `GET /$emulator/files/{name}`.
pub(crate) async fn download(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let endpoint = endpoint(&app)?;
    let (file, properties) = endpoint
        .files
        .open_blob(CONTAINER, &name)
        .await
        .map_err(blob_error)?;
    let mut response = file_body(file).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(length) = HeaderValue::from_str(&properties.size.to_string()) {
        headers.insert(header::CONTENT_LENGTH, length);
    }
    Ok(response)
}
