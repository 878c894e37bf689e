//! Device and module twins from the service side: get, patch (merge), replace.
//!
//! All need ServiceConnect. Writes take `tags` and `properties.desired` only; a body with
//! `properties.reported` is 400 (only the device writes reported properties). `If-Match` is
//! compared with the twin ETag, not the identity ETag (`deviceEtag` in the twin), and Python
//! always sends one (`"*"` unless the caller gave an ETag). Every successful write answers
//! 200 with the full twin after the change, so the caller gets the new ETag and versions
//! without a second GET. A desired change is pushed to a connected, subscribed device only
//! after it is committed.

use axum::extract::{Path, State};
use axum::response::Response;
use http::HeaderMap;
use serde_json::Value;

use super::{ApiError, AppState, Body, if_match, json_ok};
use crate::hub::policy::Rights;

/// Authorizes and reads one twin (device when `module` is `None`).
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

/// Authorizes, decodes and applies a twin write: a merge (`PATCH`) or, with `replace`, a
/// wholesale replacement of tags and desired properties (`PUT`).
async fn update(
    app: AppState,
    headers: HeaderMap,
    id: String,
    module: Option<String>,
    body: Body,
    replace: bool,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let body: Value = body.json().await?;
    let tag = if_match(&headers);
    let twin = app
        .hub
        .call(move |s| s.update_twin(&id, module.as_deref(), &body, tag.as_deref(), replace))
        .await??;
    Ok(json_ok(twin))
}

/// `GET /twins/{id}`: the device twin with `$metadata` and `$version` in both sections.
pub(crate) async fn get_twin(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    get(app, headers, id, None).await
}

/// `GET /twins/{id}/modules/{mid}`.
pub(crate) async fn get_module_twin(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((id, mid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    get(app, headers, id, Some(mid)).await
}

/// `PATCH /twins/{id}`: recursive merge of `tags` and `properties.desired`; `null` deletes a
/// key. The desired `$version` grows only if the body touches desired properties.
pub(crate) async fn patch_twin(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    update(app, headers, id, None, body, false).await
}

/// `PATCH /twins/{id}/modules/{mid}`: as [`patch_twin`], for a module twin.
pub(crate) async fn patch_module_twin(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((id, mid)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    update(app, headers, id, Some(mid), body, false).await
}

/// `PUT /twins/{id}`: `tags` and desired properties replaced wholesale (an absent section
/// becomes empty); reported properties are untouched. The device's patch carries `null` for
/// each desired key that disappeared.
pub(crate) async fn replace_twin(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    update(app, headers, id, None, body, true).await
}

/// `PUT /twins/{id}/modules/{mid}`: as [`replace_twin`], for a module twin.
pub(crate) async fn replace_module_twin(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((id, mid)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    update(app, headers, id, Some(mid), body, true).await
}
