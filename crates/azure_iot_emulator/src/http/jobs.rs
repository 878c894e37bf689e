//! Jobs v2: `PUT /jobs/v2/{id}`, `GET /jobs/v2/{id}`, `POST /jobs/v2/{id}/cancel` and
//! `GET /jobs/v2/query` (ServiceConnect). The rules live in `hub::jobs`, the timing in
//! `crate::jobs`; these handlers authorize, decode and encode.
//!
//! * Every answer is 200 with a `JobResponse` (create, get, cancel), as the Python client
//!   insists.
//! * The query filters `jobType` and `jobStatus` are compared case-insensitively (C# sends enum
//!   names, `ScheduleUpdateTwin`; Node camelCase), page with `x-ms-max-item-count` and
//!   `x-ms-continuation` like `/devices/query`, and name their items `JobResponse` in
//!   `x-ms-item-type` (PascalCase, which C# parses case-sensitively).
//! * The query body is a JSON array (what Node and C# read), except for the Python SDK's
//!   generated client (its user agent names `iothubgatewayserviceapis`), which can only
//!   deserialize the specification's `QueryResult` object `{type, items, continuationToken}`.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use azure_iot_protocol::jobs::{JobRequest, JobStatus, JobType};
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::query::{cut_page, encode_token, paging};
use super::{ApiError, AppState, Body, json_ok};
use crate::hub::policy::Rights;

/// The user agent of the Python SDK's generated REST client.
const PYTHON_GENERATED_CLIENT: &str = "iothubgatewayserviceapis";

/// A job answer as JSON.
fn job_json(job: &impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(job).map_err(|e| ApiError::invalid(format!("job: {e}")))
}

/// `PUT /jobs/v2/{id}`: schedules a twin-update or method job (see `HubState::create_job`).
pub(crate) async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let request: JobRequest = body.json().await?;
    let job = app.hub.call(move |s| s.create_job(&id, request)).await??;
    Ok(json_ok(job_json(&job)?))
}

/// `GET /jobs/v2/{id}`: the job with its device statistics; 404 `JobNotFound`.
pub(crate) async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let job = app.hub.call(move |s| s.get_job(&id)).await??;
    Ok(json_ok(job_json(&job)?))
}

/// `POST /jobs/v2/{id}/cancel`: cancels a scheduled or running job.
pub(crate) async fn cancel(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let job = app.hub.call(move |s| s.cancel_job(&id)).await??;
    Ok(json_ok(job_json(&job)?))
}

/// The query string of `GET /jobs/v2/query`.
#[derive(Deserialize)]
pub(crate) struct Filters {
    #[serde(rename = "jobType")]
    job_type: Option<String>,
    #[serde(rename = "jobStatus")]
    job_status: Option<String>,
}

/// `GET /jobs/v2/query[?jobType=..][&jobStatus=..]`: one page of jobs, oldest first.
pub(crate) async fn query(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, Rights::SERVICE_CONNECT)?;
    let (page_size, offset) = paging(&headers)?;
    let job_type = filters
        .job_type
        .filter(|t| !t.is_empty())
        .map(|t| JobType::parse(&t));
    let status = filters
        .job_status
        .filter(|s| !s.is_empty())
        .map(|s| JobStatus::parse(&s));
    let jobs = app
        .hub
        .call(move |s| s.query_jobs(job_type.as_ref(), status.as_ref()))
        .await?;
    let items = jobs.iter().map(job_json).collect::<Result<Vec<_>, _>>()?;
    let (page, next) = cut_page(&items, page_size, offset);
    let token = next.map(encode_token);
    let python = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.contains(PYTHON_GENERATED_CLIENT));
    let body = if python {
        json!({"type": "jobResponse", "items": page, "continuationToken": token})
    } else {
        Value::Array(page)
    };
    let mut response = json_ok(body);
    let response_headers = response.headers_mut();
    response_headers.insert("x-ms-item-type", HeaderValue::from_static("JobResponse"));
    if let Some(token) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response_headers.insert("x-ms-continuation", token);
    }
    Ok(response)
}
