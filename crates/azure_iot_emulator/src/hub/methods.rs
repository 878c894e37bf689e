//! Direct-method calls as they travel from the REST front-end to a device front-end.
//!
//! The REST handler asks the state owner for the identity's method target (waiting up to the
//! caller's connect timeout for the device to subscribe), sends a [`MethodCall`] to it and
//! waits up to the response timeout for the answer. The device front-end owns the request id
//! and the device protocol; the hub only routes.
//!
//! Timeouts live with the REST caller, not here: the state thread never waits. A device that
//! leaves with a call outstanding drops its `reply` sender, which the caller sees as 404
//! `DeviceNotOnline`; a reply that arrives after the caller gave up (504) finds the receiver
//! gone and is discarded, as the hub discards late method responses.

use std::time::Duration;

use azure_iot_core::method::{
    DEFAULT_RESPONSE_TIMEOUT_SECS, DirectMethodRequest, DirectMethodResponse,
    MAX_CONNECT_TIMEOUT_SECS, MAX_RESPONSE_TIMEOUT_SECS,
};
use serde_json::Value;
use tokio::sync::oneshot;

use super::Hub;
use super::devices::MethodTarget;
use super::error::{ErrorCode, HubError};

/// The smallest response timeout the hub accepts (the documented lower bound).
pub(crate) const MIN_RESPONSE_TIMEOUT_SECS: u32 = 5;

/// A method call's timeouts, checked against the hub's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MethodTimeouts {
    /// How long to wait for the device to subscribe (0: not at all).
    pub(crate) connect: Duration,
    /// How long to wait for the device's answer.
    pub(crate) response: Duration,
}

/// Checks a method request the way the hub does before anything reaches a device: a
/// non-empty `methodName`, `responseTimeoutInSeconds` 5–300 (default 30),
/// `connectTimeoutInSeconds` 0–300 (default 0). Anything else is 400 `ArgumentInvalid`.
pub(crate) fn validate_request(request: &DirectMethodRequest) -> Result<MethodTimeouts, HubError> {
    if request.method_name.trim().is_empty() {
        return Err(HubError::invalid("methodName must not be empty"));
    }
    let response_secs = request
        .response_timeout_in_seconds
        .unwrap_or(DEFAULT_RESPONSE_TIMEOUT_SECS);
    if !(MIN_RESPONSE_TIMEOUT_SECS..=MAX_RESPONSE_TIMEOUT_SECS).contains(&response_secs) {
        return Err(HubError::invalid(format!(
            "responseTimeoutInSeconds must be {MIN_RESPONSE_TIMEOUT_SECS} to {MAX_RESPONSE_TIMEOUT_SECS}"
        )));
    }
    let connect_secs = request.connect_timeout_in_seconds.unwrap_or(0);
    if connect_secs > MAX_CONNECT_TIMEOUT_SECS {
        return Err(HubError::invalid(format!(
            "connectTimeoutInSeconds must be 0 to {MAX_CONNECT_TIMEOUT_SECS}"
        )));
    }
    Ok(MethodTimeouts {
        connect: Duration::from_secs(u64::from(connect_secs)),
        response: Duration::from_secs(u64::from(response_secs)),
    })
}

/// Invokes a validated method call on a device or module and waits for its answer, in the
/// caller's task (never on the state thread): used by `POST /twins/{id}/methods` and by
/// method jobs.
///
/// Failures: 404 `DeviceNotFound` / `ModuleNotFound` at once for an unknown identity; 404
/// `DeviceNotOnline` when no subscription appears within the connect timeout, when the
/// device's connection is gone as the call is sent, or when it leaves with the call
/// unanswered; 504 `GatewayTimeout` when it keeps the call past the response timeout.
pub(crate) async fn invoke(
    hub: &Hub,
    device_id: &str,
    module_id: Option<&str>,
    request: DirectMethodRequest,
    timeouts: MethodTimeouts,
) -> Result<DirectMethodResponse, HubError> {
    let not_online = || {
        HubError::new(
            ErrorCode::DeviceNotOnline,
            "Timed out waiting for device to connect.",
        )
    };
    let (device, module) = (device_id.to_owned(), module_id.map(str::to_owned));
    let target = hub
        .call(move |s| s.method_target(&device, module.as_deref()))
        .await
        .map_err(|e| HubError::new(ErrorCode::ServerError, e.to_string()))??;
    let target = match target {
        MethodTarget::Ready(target) => target,
        MethodTarget::Wait(waiter) => match tokio::time::timeout(timeouts.connect, waiter).await {
            Ok(Ok(target)) => target,
            _ => return Err(not_online()),
        },
    };
    let (reply, answer) = oneshot::channel();
    let call = MethodCall {
        method_name: request.method_name,
        payload: request.payload,
        response_timeout: timeouts.response,
        reply,
    };
    target.send(call).await.map_err(|_| not_online())?;
    match tokio::time::timeout(timeouts.response, answer).await {
        Ok(Ok(response)) => Ok(response),
        // The device went away with the call unanswered.
        Ok(Err(_)) => Err(not_online()),
        Err(_) => Err(HubError::new(
            ErrorCode::GatewayTimeout,
            format!("Timed out waiting for the response from device {device_id}."),
        )),
    }
}

/// One method invocation on its way to a device.
#[derive(Debug)]
pub(crate) struct MethodCall {
    /// The method name.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) method_name: String,
    /// The JSON payload.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) payload: Value,
    /// How long the caller waits; a device front-end may drop the call after it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) response_timeout: Duration,
    /// Where the device's answer goes.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) reply: oneshot::Sender<DirectMethodResponse>,
}
