//! Configurations (automatic device management) and `applyConfigurationContent`.
//!
//! Reads (get, list, testQueries) need RegistryRead, writes (put, delete, apply) RegistryWrite.
//! The rules live in the state owner (`hub/configurations.rs`); these handlers authorize,
//! decode and pick the status codes: 200 with the configuration for every PUT (Python accepts
//! 200 and 201, Node any 2xx), 204 for a delete and for `applyConfigurationContent`.
//!
//! Paths: `/configurations` and `/configurations/` (C# lists with the trailing slash),
//! `/configurations/testQueries`, `/configurations/{id}`, `/devices/{id}/applyConfigurationContent`.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use azure_iot_protocol::configuration::{
    Configuration, ConfigurationContent, ConfigurationQueriesTestInput, MAX_CONFIGURATIONS,
};
use http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::{ApiError, AppState, Body, if_match, json_ok};
use crate::hub::HubState;
use crate::hub::policy::Rights;

/// `GET /configurations[?top=n]`: up to `top` (1–100, default all) configurations in id
/// order, each with its metrics.
pub(crate) async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<super::registry::ListQuery>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    let top = super::parse_top(query.top.as_deref(), MAX_CONFIGURATIONS)?;
    let items = app.hub.call(move |s| s.list_configurations(top)).await?;
    Ok(json_ok(Value::Array(items)))
}

/// `GET /configurations/{id}`: 404 `ConfigurationNotFound` if unknown.
pub(crate) async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    let config = app.hub.call(move |s| s.get_configuration(&id)).await??;
    Ok(json_ok(config))
}

/// `PUT /configurations/{id}`: create without `If-Match`, update with one.
pub(crate) async fn put(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    let config: Configuration = body.json().await?;
    let tag = if_match(&headers);
    let config = app
        .hub
        .call(move |s| s.put_configuration(&id, config, tag.as_deref()))
        .await??;
    Ok(json_ok(config))
}

/// `DELETE /configurations/{id}`: 204; `If-Match` optional (Python sends the raw ETag).
pub(crate) async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    let tag = if_match(&headers);
    app.hub
        .call(move |s| s.delete_configuration(&id, tag.as_deref()))
        .await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /configurations/testQueries`: 200 with the parse errors (empty when valid).
pub(crate) async fn test_queries(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_READ)?;
    let input: ConfigurationQueriesTestInput = body.json().await?;
    let answer = HubState::test_configuration_queries(&input);
    Ok(json_ok(serde_json::to_value(answer).map_err(|e| {
        ApiError::invalid(format!("the answer could not be encoded: {e}"))
    })?))
}

/// `POST /devices/{id}/applyConfigurationContent`: 204 once every module twin is written.
pub(crate) async fn apply_content(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    app.authorize(&headers, Rights::REGISTRY_WRITE)?;
    let content: ConfigurationContent = body.json().await?;
    app.hub
        .call(move |s| s.apply_configuration_content(&id, &content))
        .await??;
    Ok(StatusCode::NO_CONTENT)
}
