//! `POST /$emulator/faults` (body: a [`Fault`] as JSON) injects a fault;
//! `DELETE /$emulator/faults[?deviceId=...]` clears them. Emulator-specific; authenticated like
//! the service API (ServiceConnect). Both answer 204.
//!
//! Faults are how tests reproduce the hub's bad days (refused connects, throttled twins,
//! dropped connections, expired service grants) on demand; which faults exist and how each
//! front-end renders them is defined in `hub::faults`. A body that does not decode as a fault
//! (unknown `type`, missing or mistyped member) is 400 with serde's reason. Faults are keyed by
//! identity, not checked against the registry: one injected before the device exists or
//! connects waits for it, which is what a test arranging a refused first connect needs.

use axum::extract::{Query, State};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::{ApiError, AppState, Body};
use crate::hub::faults::Fault;
use crate::hub::policy::Rights;

/// `POST /$emulator/faults`: decodes a fault and hands it to the state owner; 204 once it is
/// in effect for the next matching operation.
pub(crate) async fn inject(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let fault: Fault = body.json().await?;
    app.hub
        .call(move |s| s.inject(fault))
        .await?
        .map_err(ApiError::invalid)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The query string of `DELETE /$emulator/faults`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClearQuery {
    /// `deviceId=...`: clear only that device's faults; absent clears every fault.
    device_id: Option<String>,
}

/// `DELETE /$emulator/faults[?deviceId=...]`: 204 whether or not anything was cleared, so a
/// test's clean-up step is idempotent.
pub(crate) async fn clear(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ClearQuery>,
) -> Result<StatusCode, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    app.hub
        .call(move |s| s.clear_faults(query.device_id.as_deref()))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
