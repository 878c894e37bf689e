//! CA certificates: `GET /certificates`, `GET|PUT|DELETE /certificates/{name}`.
//!
//! PUT takes `{"properties": {"certificate": "<PEM or base64 DER>"}}` (IoT Hub's shape) or
//! `{"certificate": "..."}`; a registered CA counts as verified (the emulator skips IoT Hub's
//! proof-of-possession step). Devices whose authentication type is `certificateAuthority`
//! then connect with a certificate that chains to it and names the device id as common name.
//!
//! The routes are the emulator's rendering of the hub's CA registry (on Azure it is an ARM
//! resource under the IoT hub, reached with `az iot hub certificate`); here they sit on the
//! service API with RegistryRead for reads and RegistryWrite for changes, so `azure-iot hub ca`
//! and tests can manage trust with an ordinary service token.

use axum::extract::{Path, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::{ApiError, AppState, Body, json_ok};
use crate::hub::policy::Rights;

/// `GET /certificates`: `{"value": [CertificateDescription...]}`.
pub(crate) async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    Ok(json_ok(app.hub.call(|s| s.list_cas()).await?))
}

/// `GET /certificates/{name}`: one `CertificateDescription`; 404 if none has that name.
pub(crate) async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    Ok(json_ok(app.hub.call(move |s| s.get_ca(&name)).await??))
}

/// `PUT /certificates/{name}`: registers or replaces a CA and answers its description (200).
/// A body without a certificate string, or one that is not X.509, is 400.
pub(crate) async fn put(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    let body: Value = body.json().await?;
    let certificate = certificate_text(&body)
        .ok_or_else(|| {
            ApiError::invalid("the body needs properties.certificate (PEM or base64 DER)")
        })?
        .to_owned();
    Ok(json_ok(
        app.hub
            .call(move |s| s.put_ca(&name, &certificate))
            .await??,
    ))
}

/// `DELETE /certificates/{name}`: 204; 404 if none has that name. Devices relying on it are
/// refused from their next connection.
pub(crate) async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    app.hub.call(move |s| s.delete_ca(&name)).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// The certificate of a CA registration body: `properties.certificate` (IoT Hub's shape) or
/// `certificate`. Shared with DPS's CA registry (`http::dps::certificates`).
pub(crate) fn certificate_text(body: &Value) -> Option<&str> {
    body.pointer("/properties/certificate")
        .or_else(|| body.get("certificate"))
        .and_then(Value::as_str)
}
