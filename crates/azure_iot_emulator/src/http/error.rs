//! IoT Hub error responses.
//!
//! Body (what both official service SDKs parse; `ErrorCode` at the top level is extra and
//! harmless):
//! `{"Message":"ErrorCode:{Name};{text}","ExceptionMessage":"Tracking ID:{id}-G:0-TimeStamp:{t}","ErrorCode":{n}}`,
//! with header `iothub-errorcode: {Name}` and a JSON content type (the Node SDK only parses a
//! body whose content type says JSON).
//!
//! The legacy `Message` form (`ErrorCode:{Name};{text}`) is used rather than the newer one
//! that nests a JSON string in `Message`: with it, Node's `parseErrorBody` yields typed errors
//! (`DeviceNotFoundError` for 404 with `DeviceNotFound`), while Python keeps the body text of
//! any failure. The tracking id is random per response and also logged at debug level with
//! the message, so a failure a test reports can be found in the emulator's log.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;
use time::OffsetDateTime;

use crate::error::EmulatorError;
use crate::hub::error::{ErrorCode, HubError};

/// Content type of every JSON response, success or error.
pub(crate) const JSON: &str = "application/json; charset=utf-8";

/// An error answered to a REST client: a [`HubError`] with an HTTP rendering. Handlers
/// return it with `?` from hub calls (a `HubError`) and from the state thread being gone (an
/// `EmulatorError`, answered as 500).
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) HubError);

impl ApiError {
    /// An error with `code` and `message`, made at the HTTP layer.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(HubError::new(code, message))
    }

    /// 400 `ArgumentInvalid` for a request the HTTP layer itself can tell is wrong (headers,
    /// query string, body shape).
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self(HubError::invalid(message))
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        Self(e)
    }
}

impl From<EmulatorError> for ApiError {
    fn from(e: EmulatorError) -> Self {
        Self::new(ErrorCode::ServerError, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code;
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let now = OffsetDateTime::now_utc();
        let tracking = tracking_id();
        let body = json!({
            "Message": format!("ErrorCode:{};{}", code.name(), self.0.message),
            "ExceptionMessage": format!(
                "Tracking ID:{tracking}-G:0-TimeStamp:{:02}/{:02}/{:04} {:02}:{:02}:{:02}",
                u8::from(now.month()), now.day(), now.year(), now.hour(), now.minute(), now.second()
            ),
            "ErrorCode": code.number(),
        });
        tracing::debug!(status = status.as_u16(), code = code.name(), message = %self.0.message, %tracking, "request failed");
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
        headers.insert("iothub-errorcode", HeaderValue::from_static(code.name()));
        // A body that did not arrive: its unread rest must not be taken for a next request.
        if code == ErrorCode::RequestTimeout {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// A random 32-hex-digit tracking id (the hub's are GUID-like hex too). If the system RNG
/// fails, zeros: a tracking id is diagnostic only and must not turn an error into a panic.
fn tracking_id() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 16];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return "00000000000000000000000000000000".into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
