//! `POST /$emulator/faults` (body: a [`Fault`](crate::Fault) as JSON) injects a fault;
//! `DELETE /$emulator/faults[?deviceId=...]` clears them. Emulator-specific; authenticated like
//! the service API (ServiceConnect). Both answer 204.

use axum::extract::{Query, State};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::{ApiError, AppState, Body};
use crate::hub::faults::Fault;
use crate::hub::policy::Rights;

pub(crate) async fn inject(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let fault: Fault = body.json()?;
    app.hub
        .call(move |s| s.inject(fault))
        .await?
        .map_err(ApiError::invalid)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClearQuery {
    device_id: Option<String>,
}

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
