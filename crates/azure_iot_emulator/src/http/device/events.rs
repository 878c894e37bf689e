//! `POST /devices/{id}[/modules/{mid}]/messages/events`: one message, or a batch.
//!
//! * One message: the body is the payload; `iothub-app-{name}` headers are application
//!   properties and `iothub-messageid`, `iothub-correlationid`, `iothub-contenttype`,
//!   `iothub-contentencoding` … system properties (the protocol crate's header mapping). The
//!   HTTP `Content-Type` is not the message's content type. Header names are case-insensitive
//!   and the HTTP stack hands them over in lower case, so an application property sent as
//!   `iothub-app-Color` is named `color`.
//! * A batch (`Content-Type: application/vnd.microsoft.iothub.json`): a JSON array of
//!   `{"body": "<base64>", "properties": {"<header name>": "<value>"}}`; `"base64Encoded":
//!   false` marks a body that is the text itself (the C SDK's string messages).
//!
//! Either way at most 256 KiB (413 `MessageTooLarge` beyond), 204 once every message is
//! durable in the telemetry log.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, State};
use base64::Engine as _;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::Value;

use super::{MAX_MESSAGE_BYTES, authenticate};
use crate::http::{ApiError, AppState, Body, Peer};
use crate::hub::error::ErrorCode;
use azure_iot_core::message::Message;
use azure_iot_protocol::Identity;
use azure_iot_protocol::http::message_from_headers;

/// The batch content type.
pub(crate) const BATCH_CONTENT_TYPE: &str = "application/vnd.microsoft.iothub.json";

/// `POST /devices/{id}/messages/events`.
pub(crate) async fn send_device(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(device_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    send(&app, &peer, Identity::device(device_id), &headers, body).await
}

/// `POST /devices/{id}/modules/{mid}/messages/events`.
pub(crate) async fn send_module(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path((device_id, module_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let identity = Identity::module(device_id, module_id);
    send(&app, &peer, identity, &headers, body).await
}

async fn send(
    app: &AppState,
    peer: &Peer,
    identity: Identity,
    headers: &HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let grant = authenticate(app, headers, peer, &identity).await?;
    let bytes = body.bytes_up_to(MAX_MESSAGE_BYTES).await?;
    let is_batch = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.trim()
                .to_ascii_lowercase()
                .starts_with(BATCH_CONTENT_TYPE)
        });
    let messages = if is_batch {
        batch_messages(&bytes)?
    } else {
        vec![single_message(headers, bytes)?]
    };
    app.device
        .send_telemetry_once(&identity, &grant, messages)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The message a single send carries: the body and the property headers.
fn single_message(headers: &HeaderMap, body: bytes::Bytes) -> Result<Message, ApiError> {
    let properties: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(name, _)| is_property_header(name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    let size = body.len()
        + properties
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    check_size(size)?;
    message_from_headers(properties, body)
        .map_err(|e| ApiError::invalid(format!("the message's properties are not valid: {e}")))
}

/// The headers that carry message properties (everything else, `Authorization` included,
/// stays out of the message).
fn is_property_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("iothub-") || lower == azure_iot_protocol::http::COMPONENT_NAME
}

fn check_size(size: usize) -> Result<(), ApiError> {
    if size > MAX_MESSAGE_BYTES {
        return Err(ApiError::new(
            ErrorCode::MessageTooLarge,
            format!("the message is {size} bytes; IoT Hub accepts at most {MAX_MESSAGE_BYTES}"),
        ));
    }
    Ok(())
}

/// One element of a batch.
#[derive(Deserialize)]
struct BatchItem {
    body: String,
    #[serde(rename = "base64Encoded", default = "yes")]
    base64_encoded: bool,
    #[serde(default)]
    properties: BTreeMap<String, Value>,
}

fn yes() -> bool {
    true
}

/// The messages of a batch body, in order.
fn batch_messages(bytes: &[u8]) -> Result<Vec<Message>, ApiError> {
    let items: Vec<BatchItem> = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid(format!(
            "a batch must be a JSON array of {{\"body\", \"properties\"}} objects: {e}"
        ))
    })?;
    if items.is_empty() {
        return Err(ApiError::invalid("the batch holds no messages"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let body = if item.base64_encoded {
                base64::engine::general_purpose::STANDARD
                    .decode(item.body.trim())
                    .map_err(|e| {
                        ApiError::invalid(format!(
                            "message {index} of the batch: the body is not base64 ({e}); send \"base64Encoded\": false for text"
                        ))
                    })?
            } else {
                item.body.into_bytes()
            };
            let properties: Vec<(String, String)> = item
                .properties
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect();
            message_from_headers(
                properties.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                body,
            )
            .map_err(|e| {
                ApiError::invalid(format!(
                    "message {index} of the batch: its properties are not valid: {e}"
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_decode_base64_and_text_bodies_with_header_named_properties() {
        let batch = br#"[
            {"body": "aGVsbG8=", "properties": {"iothub-app-k": "v", "iothub-messageid": "m1"}},
            {"body": "plain", "base64Encoded": false}
        ]"#;
        let messages = batch_messages(batch).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].body().as_ref(), b"hello");
        assert_eq!(messages[0].property("k"), Some("v"));
        assert_eq!(
            messages[0].system_properties().message_id.as_deref(),
            Some("m1")
        );
        assert_eq!(messages[1].body().as_ref(), b"plain");
    }

    #[test]
    fn bad_batches_are_argument_errors() {
        for bad in [&b"[]"[..], b"{}", b"[{\"body\": \"%%%\"}]", b"not json"] {
            let e = batch_messages(bad).unwrap_err();
            assert_eq!(e.0.code, ErrorCode::ArgumentInvalid, "{:?}", e.0.message);
        }
    }

    #[test]
    fn only_iothub_headers_become_properties() {
        assert!(is_property_header("IoTHub-App-Color"));
        assert!(is_property_header("dt-subject"));
        assert!(!is_property_header("authorization"));
        assert!(!is_property_header("content-type"));
    }
}
