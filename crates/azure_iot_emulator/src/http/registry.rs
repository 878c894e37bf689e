//! Identity registry: devices, modules, bulk operations, statistics, C2D purge.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Body, if_match, json_ok, json_response};
use crate::hub::identity::IdentityBody;
use crate::hub::policy::Rights;

/// The most devices one list call returns (the hub's cap).
const MAX_LIST: usize = 1000;

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    top: Option<String>,
}

pub(crate) async fn list_devices(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    let top = match query.top.as_deref() {
        None => MAX_LIST,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIST).contains(n))
            .ok_or_else(|| ApiError::invalid(format!("top must be 1 to {MAX_LIST}")))?,
    };
    let devices = app.hub.call(move |s| s.list_devices(top)).await?;
    Ok(json_ok(Value::Array(devices)))
}

pub(crate) async fn get_device(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    let device = app.hub.call(move |s| s.get_identity(&id, None)).await??;
    Ok(json_ok(device))
}

pub(crate) async fn put_device(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    let body: IdentityBody = body.json()?;
    let tag = if_match(&headers);
    let device = app
        .hub
        .call(move |s| s.put_identity(&id, None, body, tag.as_deref()))
        .await??;
    Ok(json_ok(device))
}

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

pub(crate) async fn list_modules(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    let modules = app.hub.call(move |s| s.list_modules(&id)).await??;
    Ok(json_ok(Value::Array(modules)))
}

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

pub(crate) async fn put_module(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((id, mid)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    let body: IdentityBody = body.json()?;
    let tag = if_match(&headers);
    let module = app
        .hub
        .call(move |s| s.put_identity(&id, Some(&mid), body, tag.as_deref()))
        .await??;
    Ok(json_ok(module))
}

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
pub(crate) async fn bulk(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    let entries: Vec<Value> = body.json()?;
    let (ok, result) = app.hub.call(move |s| s.bulk(entries)).await??;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(json_response(status, result))
}

pub(crate) async fn device_statistics(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    Ok(json_ok(app.hub.call(|s| s.device_statistics()).await?))
}

pub(crate) async fn service_statistics(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    Ok(json_ok(app.hub.call(|s| s.service_statistics()).await?))
}

/// `DELETE /devices/{id}/commands`.
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
