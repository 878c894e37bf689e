//! The device-side HTTPS API, on the same port as the service REST API: telemetry (single and
//! batch), cloud-to-device polling with ETag lock tokens, and (in `files`) file upload.
//!
//! ```text
//!  request ─▶ authenticate (SAS in Authorization, or the TLS client certificate)
//!          ─▶ device core, stateless (`DeviceCore::send_telemetry_once`, `receive_c2d_locked`,
//!             `settle_c2d_locked`): no live connection is registered, so a device's MQTT or
//!             AMQP connection is never replaced by its HTTPS requests
//! ```
//!
//! What every official SDK sends is accepted (../shared/protocol/https.md): any
//! `api-version`; `devicebound` or `deviceBound`; a trailing `/` on file paths; header names
//! in any case; an `If-Match` quoted or not. Answers use the hub's codes: 401 for a request
//! whose credentials do not grant the identity in the path, 400 for bad input, 413 for a
//! message over 256 KiB, 412 for a lock token that holds nothing.

pub(crate) mod c2d;
pub(crate) mod events;
pub(crate) mod files;

use axum::extract::Request;
use http::HeaderMap;

use super::{ApiError, AppState, Peer};
use crate::device::{Grant, RefusalReason};
use crate::hub::error::ErrorCode;
use azure_iot_protocol::Identity;

/// IoT Hub's largest device-to-cloud message (body and properties), and the largest batch.
pub(crate) const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Authenticates a device request for `identity`: its `Authorization` SAS token (the
/// device's or module's key, or a policy with DeviceConnect), else the TLS client
/// certificate. Failures are 401 `IotHubUnauthorizedAccess`, never saying more than the log.
pub(crate) async fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
    peer: &Peer,
    identity: &Identity,
) -> Result<Grant, ApiError> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty());
    app.device
        .authenticate(identity, token, &peer.1)
        .await
        .map_err(|refusal| {
            tracing::debug!(%identity, detail = %refusal.detail, "device HTTPS request refused");
            match refusal.reason {
                RefusalReason::ServerUnavailable => ApiError::new(
                    ErrorCode::ServerError,
                    "the hub cannot serve the request now",
                ),
                _ => ApiError::new(
                    ErrorCode::IotHubUnauthorizedAccess,
                    format!("the credentials do not grant {identity}"),
                ),
            }
        })
}

/// The query string's parameters, percent-decoded; a bare key (`?reject`) has an empty
/// value.
pub(crate) fn query_pairs(request_query: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    request_query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Twin and direct-method requests on the device HTTPS path: IoT Hub serves them to devices
/// over MQTT and AMQP only, so the answer is an explicit refusal, not a 404 an SDK would read
/// as an unknown device.
pub(crate) async fn twin_or_method(request: Request) -> ApiError {
    ApiError::new(
        ErrorCode::NotImplemented,
        format!(
            "{} {}: device twins and direct methods are not available over the device HTTPS API; use MQTT or AMQP",
            request.method(),
            request.uri().path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode_and_keep_bare_keys() {
        let pairs = query_pairs(Some("api-version=2021-04-12&reject&x=a%2Fb"));
        assert_eq!(
            pairs,
            vec![
                ("api-version".into(), "2021-04-12".into()),
                ("reject".into(), String::new()),
                ("x".into(), "a/b".into()),
            ]
        );
        assert!(query_pairs(None).is_empty());
    }
}
