//! The Device Provisioning Service over HTTPS, on the hub's HTTPS port (`crate::route` tells
//! the two apart): the device API (`device`) and the service API (`service`).
//!
//! Paths are matched by hand, not by the axum router: DPS paths are case-insensitive (Node
//! writes `/enrollmentGroups/{id}` and `/enrollmentgroups/{id}/attestationmechanism`), may end
//! in `/` (the C SDK's bulk call), and carry percent-encoded ids. Every failure is DPS's error
//! body (`ErrorDetails`) with its code in the `x-ms-error-code` header and a JSON content type.

mod certificates;
mod device;
mod service;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;

use super::{AppState, Body};
use crate::dps::records::code;
use crate::dps::{Dps, DpsError};

/// Answers a request the classification step gave to DPS.
pub(super) async fn handle(state: AppState, dps: Dps, request: Request) -> Response {
    let segments: Vec<String> = request
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let first = segments.first().map(|s| s.to_ascii_lowercase());
    let outcome = match first.as_deref() {
        Some("enrollments" | "enrollmentgroups" | "registrations") => {
            service::handle(&state, &dps, &segments, request).await
        }
        Some("$emulator") => certificates::handle(&state, &dps, &segments, request).await,
        _ => device::handle(&state, &dps, &segments, request).await,
    };
    outcome.unwrap_or_else(error_response)
}

/// DPS's error answer: the status, `ErrorDetails` as JSON, `x-ms-error-code`, and
/// `retry-after` when the refusal is temporary.
pub(crate) fn error_response(error: DpsError) -> Response {
    let mut details = *error.details;
    if details.tracking_id.is_empty() {
        details.tracking_id = uuid::Uuid::new_v4().to_string();
    }
    details
        .timestamp_utc
        .get_or_insert_with(crate::hub::state::now);
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json(status, &details);
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&details.error_code.to_string()) {
        headers.insert("x-ms-error-code", v);
    }
    if let Some(seconds) = error.retry_after {
        headers.insert(
            azure_iot_protocol::dps::RETRY_AFTER,
            HeaderValue::from(seconds),
        );
    }
    response
}

/// A JSON answer.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(text) => {
            let mut response = (status, text).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(super::error::JSON),
            );
            response
        }
        Err(e) => error_response(DpsError::internal(e)),
    }
}

/// Reads the body (after authorization) with the HTTPS front-end's size and time limits.
async fn read_body(state: &AppState, request: Request) -> Result<bytes::Bytes, DpsError> {
    let body = Body {
        body: request.into_body(),
        timeout: state.body_timeout,
    };
    body.bytes().await.map_err(|e| {
        let status = e.0.code.status();
        let code = if status == 413 {
            code::TOO_LARGE
        } else {
            code::BAD_REQUEST
        };
        DpsError::new(code, e.0.message)
    })
}

/// A header as text, if present and visible ASCII.
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// 404 for a path or method the DPS API does not have.
fn no_route(request: &Request) -> DpsError {
    DpsError::new(
        code::NOT_FOUND,
        format!(
            "no Device Provisioning Service endpoint {} {}",
            request.method(),
            request.uri().path()
        ),
    )
}
