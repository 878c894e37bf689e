//! Device and module twins from the service side: get, patch (merge), replace.

use axum::extract::{Path, State};
use axum::response::Response;
use http::HeaderMap;
use serde_json::Value;

use super::{ApiError, AppState, Body, if_match, json_ok};
use crate::hub::policy::Rights;

async fn get(
    app: AppState,
    headers: HeaderMap,
    id: String,
    module: Option<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let twin = app
        .hub
        .call(move |s| s.get_twin(&id, module.as_deref()))
        .await??;
    Ok(json_ok(twin))
}

async fn update(
    app: AppState,
    headers: HeaderMap,
    id: String,
    module: Option<String>,
    body: Body,
    replace: bool,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let body: Value = body.json()?;
    let tag = if_match(&headers);
    let twin = app
        .hub
        .call(move |s| s.update_twin(&id, module.as_deref(), &body, tag.as_deref(), replace))
        .await??;
    Ok(json_ok(twin))
}

pub(crate) async fn get_twin(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    get(app, headers, id, None).await
}

pub(crate) async fn get_module_twin(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((id, mid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    get(app, headers, id, Some(mid)).await
}

pub(crate) async fn patch_twin(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    update(app, headers, id, None, body, false).await
}

pub(crate) async fn patch_module_twin(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((id, mid)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    update(app, headers, id, Some(mid), body, false).await
}

pub(crate) async fn replace_twin(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    update(app, headers, id, None, body, true).await
}

pub(crate) async fn replace_module_twin(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((id, mid)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    update(app, headers, id, Some(mid), body, true).await
}
