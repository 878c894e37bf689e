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

use azure_iot_core::method::DirectMethodResponse;
use serde_json::Value;
use tokio::sync::oneshot;

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
