//! Cloud-to-device messages by polling, under ETag lock tokens.
//!
//! * `GET /devices/{id}/messages/devicebound`: 204 when nothing is deliverable, else 200 with
//!   the body, `ETag: "{lockToken}"` (quoted: the C SDK insists) and the message's properties
//!   as `iothub-*` / `iothub-app-*` headers. The lock lasts `iothub-messagelocktimeout`
//!   seconds (C# sends it) or [`DEFAULT_LOCK`].
//! * `DELETE …/devicebound/{lockToken}` completes, with `?reject` rejects (dead-letters);
//!   `POST …/devicebound/{lockToken}/abandon` gives it back with its delivery count. 204.
//! * A token that holds nothing (settled, expired, re-delivered since, another device's) or
//!   an `If-Match` that names another token is 412 `PreconditionFailed`, what the C# SDK
//!   maps to its lock-lost error.

use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use super::{authenticate, query_pairs};
use crate::http::{ApiError, AppState, Peer};
use crate::hub::error::{ErrorCode, HubError};
use crate::hub::queue::Settle;
use azure_iot_protocol::Identity;
use azure_iot_protocol::http::message_headers;

/// How long a received message stays locked when the client does not say.
pub(crate) const DEFAULT_LOCK: Duration = Duration::from_secs(60);
/// The longest lock a client may ask for.
pub(crate) const MAX_LOCK: Duration = Duration::from_secs(300);
/// The query parameter with the lock time in seconds.
const LOCK_TIMEOUT_PARAMETER: &str = "iothub-messagelocktimeout";

/// `GET /devices/{id}/messages/devicebound`.
pub(crate) async fn receive(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(device_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let identity = Identity::device(device_id);
    authenticate(&app, request.headers(), &peer, &identity).await?;
    let lock_for = lock_time(request.uri().query())?;
    let Some(delivery) = app
        .device
        .receive_c2d_locked(identity.device_id(), lock_for)
        .await?
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let mut response = (StatusCode::OK, delivery.message.body().clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    for (name, value) in message_headers(&delivery.message) {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => tracing::warn!(
                property = %name,
                "a C2D message property cannot travel as an HTTP header; left out"
            ),
        }
    }
    Ok(response)
}

/// `DELETE /devices/{id}/messages/devicebound/{lockToken}[?reject]`.
pub(crate) async fn complete_or_reject(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path((device_id, token)): Path<(String, String)>,
    request: Request,
) -> Result<StatusCode, ApiError> {
    let reject = query_pairs(request.uri().query())
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("reject"));
    let settle = if reject {
        Settle::Reject
    } else {
        Settle::Complete
    };
    settle_request(&app, &peer, device_id, &token, request.headers(), settle).await
}

/// `POST /devices/{id}/messages/devicebound/{lockToken}/abandon`.
pub(crate) async fn abandon(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path((device_id, token)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    settle_request(&app, &peer, device_id, &token, &headers, Settle::Abandon).await
}

async fn settle_request(
    app: &AppState,
    peer: &Peer,
    device_id: String,
    token: &str,
    headers: &HeaderMap,
    settle: Settle,
) -> Result<StatusCode, ApiError> {
    let identity = Identity::device(device_id);
    authenticate(app, headers, peer, &identity).await?;
    let token = token.trim().trim_matches('"');
    if let Some(if_match) = crate::http::if_match(headers) {
        let if_match = if_match.trim().trim_matches('"');
        if if_match != "*" && if_match != token {
            return Err(ApiError::new(
                ErrorCode::PreconditionFailed,
                "If-Match names another lock token than the path",
            ));
        }
    }
    app.device
        .settle_c2d_locked(identity.device_id(), token, settle)
        .await
        .map_err(lock_lost_is_precondition_failed)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Over HTTPS a lost lock is 412 `PreconditionFailed` (412001); `DeviceMessageLockLost`
/// (412002) is the AMQP and MQTT form.
fn lock_lost_is_precondition_failed(e: HubError) -> ApiError {
    if e.code == ErrorCode::DeviceMessageLockLost {
        ApiError::new(ErrorCode::PreconditionFailed, e.message)
    } else {
        ApiError::from(e)
    }
}

/// The lock time the query asks for (`iothub-messagelocktimeout`, seconds, 1 to 300), or
/// the default.
fn lock_time(query: Option<&str>) -> Result<Duration, ApiError> {
    let Some((_, value)) = query_pairs(query)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(LOCK_TIMEOUT_PARAMETER))
    else {
        return Ok(DEFAULT_LOCK);
    };
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
        .filter(|d| !d.is_zero() && *d <= MAX_LOCK)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "{LOCK_TIMEOUT_PARAMETER} must be a number of seconds from 1 to {}",
                MAX_LOCK.as_secs()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_time_defaults_and_bounds() {
        assert_eq!(lock_time(None).unwrap(), DEFAULT_LOCK);
        assert_eq!(
            lock_time(Some("api-version=1&iothub-messagelocktimeout=30")).unwrap(),
            Duration::from_secs(30)
        );
        for bad in ["0", "301", "x", ""] {
            let q = format!("iothub-messagelocktimeout={bad}");
            assert!(lock_time(Some(&q)).is_err(), "{bad}");
        }
    }
}
