//! Identity registry: devices, modules, bulk operations, statistics, C2D purge.
//!
//! Reads need RegistryRead, writes RegistryWrite (the `registryReadWrite` or `iothubowner`
//! policy), statistics of connected devices and the C2D purge ServiceConnect. The rules
//! themselves (create versus update, ETags, key generation, validation) live in the state
//! owner (`HubState::put_identity` and friends); these handlers only authorize, decode and
//! pick the status code the SDKs expect: 200 with the full identity for every PUT (Python
//! rejects 201), 204 for deletes.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Body, if_match, json_ok, json_response};
use crate::hub::identity::IdentityBody;
use crate::hub::policy::Rights;

/// The most devices one list call returns (the hub's documented cap, also the default when
/// `top` is absent).
const MAX_LIST: usize = 1000;

/// The query string of `GET /devices` and `GET /configurations`.
#[derive(Deserialize)]
pub(crate) struct ListQuery {
    /// `top=n`, kept as text so that a bad value is the hub's 400 and not axum's rejection.
    pub(super) top: Option<String>,
}

/// `GET /devices[?top=n]` (Node sends `/devices/`): up to `top` devices (1–1000) in id order.
/// A `top` outside that range or not a number is 400 rather than silently clamped.
pub(crate) async fn list_devices(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    let top = super::parse_top(query.top.as_deref(), MAX_LIST)?;
    let devices = app.hub.call(move |s| s.list_devices(top)).await?;
    Ok(json_ok(Value::Array(devices)))
}

/// `GET /devices/{id}`: the device with its authentication and live connection state; 404
/// `DeviceNotFound` if unknown.
pub(crate) async fn get_device(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    let device = app.hub.call(move |s| s.get_identity(&id, None)).await??;
    Ok(json_ok(device))
}

/// `PUT /devices/{id}`: create without `If-Match` (409 `DeviceAlreadyExists` if the id is
/// taken), update with one (`"*"` or the current ETag, else 412). Missing SAS keys are
/// generated and echoed in the answer; a device disabled by the update is disconnected.
pub(crate) async fn put_device(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    let body: IdentityBody = body.json().await?;
    let tag = if_match(&headers);
    let device = app
        .hub
        .call(move |s| s.put_identity(&id, None, body, tag.as_deref()))
        .await??;
    Ok(json_ok(device))
}

/// `DELETE /devices/{id}`: removes the device, its modules, twin and queued C2D messages;
/// 204. `If-Match` is optional (`"*"` from the SDKs); a stale one is 412.
pub(crate) async fn delete_device(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    let tag = if_match(&headers);
    app.hub
        .call(move |s| s.delete_identity(&id, None, tag.as_deref()))
        .await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /devices/{id}/modules`: every module of the device (404 if the device is unknown).
pub(crate) async fn list_modules(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    let modules = app.hub.call(move |s| s.list_modules(&id)).await??;
    Ok(json_ok(Value::Array(modules)))
}

/// `GET /devices/{id}/modules/{mid}`: 404 `DeviceNotFound` or `ModuleNotFound`.
pub(crate) async fn get_module(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((id, mid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    let module = app
        .hub
        .call(move |s| s.get_identity(&id, Some(&mid)))
        .await??;
    Ok(json_ok(module))
}

/// `PUT /devices/{id}/modules/{mid}`: the same create/update and ETag rules as devices, with
/// `ModuleAlreadyExists`; the device must exist (no implicit device create).
pub(crate) async fn put_module(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((id, mid)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    let body: IdentityBody = body.json().await?;
    let tag = if_match(&headers);
    let module = app
        .hub
        .call(move |s| s.put_identity(&id, Some(&mid), body, tag.as_deref()))
        .await??;
    Ok(json_ok(module))
}

/// `DELETE /devices/{id}/modules/{mid}`: removes the module and its twin; 204.
pub(crate) async fn delete_module(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((id, mid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    let tag = if_match(&headers);
    app.hub
        .call(move |s| s.delete_identity(&id, Some(&mid), tag.as_deref()))
        .await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /devices`: 200 when every entry succeeded, 400 with the same body shape otherwise.
///
/// The body is a JSON array of `ExportImportDevice` entries (1–100). A body that is not an
/// array, or has too many entries, fails as a whole with an ordinary error body; per-entry
/// failures come back in `errors` while the other entries are applied.
pub(crate) async fn bulk(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    let entries: Vec<Value> = body.json().await?;
    let (ok, result) = app.hub.call(move |s| s.bulk(entries)).await??;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(json_response(status, result))
}

/// `GET /statistics/devices`: `{totalDeviceCount, enabledDeviceCount, disabledDeviceCount}`.
pub(crate) async fn device_statistics(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    Ok(json_ok(app.hub.call(|s| s.device_statistics()).await?))
}

/// `GET /statistics/service`: `{connectedDeviceCount}`, from live connections.
pub(crate) async fn service_statistics(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    Ok(json_ok(app.hub.call(|s| s.service_statistics()).await?))
}

/// `DELETE /devices/{id}/commands`: drops every queued C2D message of the device and answers
/// 200 `{"totalMessagesPurged": n, "deviceId": id, "moduleId": null}` (Python accepts only
/// 200 here). Each purged message whose sender asked for negative or full acknowledgement
/// produces a `Purged` feedback record. 404 for an unknown device.
pub(crate) async fn purge_commands(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let device = id.clone();
    let purged = app.hub.call(move |s| s.purge_c2d(&device)).await??;
    Ok(json_ok(json!({
        "totalMessagesPurged": purged,
        "deviceId": id,
        "moduleId": null,
    })))
}
