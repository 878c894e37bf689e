//! Direct methods: a service calls a named method on a device or module and waits for the
//! device's answer.
//!
//! ```text
//! service ── DirectMethodRequest ──▶ hub ── MethodRequest ──▶ device
//! service ◀── DirectMethodResponse ── hub ◀── MethodResponse ── device
//! ```
//!
//! The device chooses the status (any integer) and the JSON payload; the hub passes both
//! through unchanged with HTTP 200. Payloads are JSON: an empty body on the wire means `null`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Default time the hub waits for a device's answer, in seconds (the Node service SDK's
/// default; the hub accepts 5 to 300).
pub const DEFAULT_RESPONSE_TIMEOUT_SECS: u32 = 30;

/// The longest response timeout IoT Hub accepts, in seconds.
pub const MAX_RESPONSE_TIMEOUT_SECS: u32 = 300;

/// The longest connect timeout IoT Hub accepts, in seconds.
pub const MAX_CONNECT_TIMEOUT_SECS: u32 = 300;

/// A method call as the device receives it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MethodRequest {
    /// The method name.
    pub name: String,
    /// The hub's request id; the response must carry it back.
    pub request_id: String,
    /// The JSON payload (`null` when the hub sent an empty body).
    pub payload: Value,
}

impl MethodRequest {
    /// Builds a request from the wire: `body` must be empty or JSON.
    pub fn from_wire(
        name: impl Into<String>,
        request_id: impl Into<String>,
        body: &[u8],
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            name: name.into(),
            request_id: request_id.into(),
            payload: json_or_null(body)?,
        })
    }
}

/// A device's answer to a [`MethodRequest`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MethodResponse {
    /// The request id of the call being answered.
    pub request_id: String,
    /// The status the device chose (e.g. 200, 404, 500).
    pub status: i32,
    /// The JSON payload.
    pub payload: Value,
}

impl MethodResponse {
    /// An answer to the request with `request_id`.
    pub fn new(request_id: impl Into<String>, status: i32, payload: Value) -> Self {
        Self {
            request_id: request_id.into(),
            status,
            payload,
        }
    }

    /// The body to send: the payload as JSON text (`null` for no payload, as the Python SDK
    /// sends).
    pub fn body(&self) -> Bytes {
        Bytes::from(self.payload.to_string())
    }
}

/// A method invocation as the service sends it (`POST /twins/{id}/methods`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DirectMethodRequest {
    /// The method name.
    pub method_name: String,
    /// The JSON payload.
    #[serde(default)]
    pub payload: Value,
    /// How long the hub waits for the device's answer, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout_in_seconds: Option<u32>,
    /// How long the hub waits for an offline device to connect, in seconds (0: fail at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_in_seconds: Option<u32>,
}

impl DirectMethodRequest {
    /// A call to `method_name` with `payload` and the hub's default timeouts.
    pub fn new(method_name: impl Into<String>, payload: Value) -> Self {
        Self {
            method_name: method_name.into(),
            payload,
            response_timeout_in_seconds: None,
            connect_timeout_in_seconds: None,
        }
    }

    /// Sets the response timeout in seconds.
    pub fn with_response_timeout(mut self, seconds: u32) -> Self {
        self.response_timeout_in_seconds = Some(seconds);
        self
    }

    /// Sets the connect timeout in seconds.
    pub fn with_connect_timeout(mut self, seconds: u32) -> Self {
        self.connect_timeout_in_seconds = Some(seconds);
        self
    }
}

/// The service's view of the device's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DirectMethodResponse {
    /// The status the device chose.
    pub status: i32,
    /// The device's JSON payload.
    #[serde(default)]
    pub payload: Value,
}

impl DirectMethodResponse {
    /// A response with `status` and `payload`.
    pub fn new(status: i32, payload: Value) -> Self {
        Self { status, payload }
    }
}

impl From<MethodResponse> for DirectMethodResponse {
    fn from(response: MethodResponse) -> Self {
        Self {
            status: response.status,
            payload: response.payload,
        }
    }
}

/// Parses a JSON body, treating an empty (or all-whitespace) body as `null`.
pub fn json_or_null(body: &[u8]) -> Result<Value, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(Value::Null)
    } else {
        serde_json::from_slice(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_body_is_null_and_bad_json_is_an_error() {
        assert_eq!(
            MethodRequest::from_wire("m", "1", b"").unwrap().payload,
            Value::Null
        );
        assert_eq!(
            MethodRequest::from_wire("m", "1", b" ").unwrap().payload,
            Value::Null
        );
        assert_eq!(
            MethodRequest::from_wire("m", "1", br#"{"delay":5}"#)
                .unwrap()
                .payload,
            json!({"delay": 5})
        );
        assert!(MethodRequest::from_wire("m", "1", b"{nope").is_err());
    }

    #[test]
    fn response_body_is_json_text() {
        assert_eq!(
            MethodResponse::new("r", 404, Value::Null).body().as_ref(),
            b"null"
        );
        assert_eq!(
            MethodResponse::new("r", 200, json!({"result": "ok"}))
                .body()
                .as_ref(),
            br#"{"result":"ok"}"#
        );
    }

    #[test]
    fn service_request_uses_the_rest_field_names() {
        let request = DirectMethodRequest::new("reboot", json!({"delay": 5}))
            .with_response_timeout(10)
            .with_connect_timeout(0);
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"methodName": "reboot", "payload": {"delay": 5},
                   "responseTimeoutInSeconds": 10, "connectTimeoutInSeconds": 0})
        );
        let parsed: DirectMethodRequest = serde_json::from_str(r#"{"methodName":"m"}"#).unwrap();
        assert_eq!(parsed.payload, Value::Null);
        let result: DirectMethodResponse =
            serde_json::from_str(r#"{"status":500,"payload":"plain string"}"#).unwrap();
        assert_eq!(
            result,
            DirectMethodResponse::new(500, json!("plain string"))
        );
    }
}
