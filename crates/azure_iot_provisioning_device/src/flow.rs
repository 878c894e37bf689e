//! The registration flow, the same on every transport: register, then poll the operation
//! until DPS gives a final status, waiting `retry-after` between requests.
//!
//! A transport is an [`Exchange`]: it sends one register or poll request and returns DPS's
//! [`Reply`] (HTTP-style status, JSON body, retry hint). [`judge`] decides what a reply means,
//! as the official SDKs do (`dps.md` §2.4):
//!
//! | status | body `status` | next |
//! |---|---|---|
//! | < 300 | `assigning` / `unassigned` | poll the operation after `retry-after` (2 s if absent) |
//! | < 300 | `assigned` | done |
//! | < 300 | `failed` / `disabled` | typed error with DPS's `errorCode` and `errorMessage` |
//! | 300–428 | – | typed error (401 unauthorised, 404 not found, others by status) |
//! | ≥ 429 | – | send the same request again after `retry-after` |
//!
//! [`run`] drives the loop; the caller bounds it with the overall timeout.

use std::future::Future;
use std::time::Duration;

use azure_iot_protocol::dps::ErrorDetails;
use azure_iot_protocol::dps::registration::{
    OperationStatus, RegistrationResult, RegistrationStatus,
};

use crate::error::{Error, Result};

/// How long to wait before polling when DPS sends no `retry-after` (the Python and Node SDKs'
/// default).
pub(crate) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(2);

/// The longest wait a `retry-after` may ask for; a larger hint is capped (the overall timeout
/// ends the registration long before anyway).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// DPS's answer to one request, whatever the transport.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    /// HTTP-style status (the HTTPS status, the MQTT topic's, or for AMQP 200 / the status of
    /// a rejection's error code).
    pub(crate) status: u16,
    /// The JSON body: an operation status, or DPS's error body.
    pub(crate) body: Vec<u8>,
    /// The retry hint in whole seconds, if DPS sent one.
    pub(crate) retry_after: Option<u32>,
}

/// One transport's way of sending the two requests.
pub(crate) trait Exchange {
    /// Sends the register request with `body` (a `DeviceRegistration` JSON).
    fn register(&mut self, body: &[u8]) -> impl Future<Output = Result<Reply>> + Send;
    /// Asks for the status of `operation_id`.
    fn poll(&mut self, operation_id: &str) -> impl Future<Output = Result<Reply>> + Send;
}

/// What to do after a reply.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Poll `operation_id` after `wait`.
    Poll {
        /// The operation to ask about.
        operation_id: String,
        /// How long to wait first.
        wait: Duration,
    },
    /// Send the same request again after `wait` (DPS throttled it or failed inside).
    Retry {
        /// How long to wait first.
        wait: Duration,
    },
    /// The registration is assigned.
    Assigned(Box<Assignment>),
}

/// A finished, assigned registration: the operation that ended it and DPS's record.
#[derive(Debug, PartialEq)]
pub(crate) struct Assignment {
    /// The operation id of the final status (as the official SDKs report it).
    pub(crate) operation_id: String,
    /// The registration record.
    pub(crate) state: RegistrationResult,
}

/// Reads a retry hint as DPS sends it: whole seconds, as a number or text.
pub(crate) fn parse_retry_after(text: &str) -> Option<u32> {
    text.trim().parse().ok()
}

/// The wait a reply asks for.
fn wait_of(reply: &Reply) -> Duration {
    reply
        .retry_after
        .map_or(DEFAULT_RETRY_AFTER, |s| Duration::from_secs(u64::from(s)))
        .min(MAX_RETRY_AFTER)
}

/// What a reply means (see the module docs).
pub(crate) fn judge(reply: &Reply) -> Result<Step> {
    if reply.status >= 429 {
        return Ok(Step::Retry {
            wait: wait_of(reply),
        });
    }
    if reply.status >= 300 {
        return Err(refusal(reply));
    }
    let status: OperationStatus = serde_json::from_slice(&reply.body).map_err(|e| {
        Error::Protocol(format!(
            "the operation status is not the expected JSON: {e}"
        ))
    })?;
    match status.status {
        RegistrationStatus::Assigning | RegistrationStatus::Unassigned => {
            if status.operation_id.is_empty() {
                return Err(Error::Protocol(
                    "an operation status without an operation id".to_owned(),
                ));
            }
            Ok(Step::Poll {
                operation_id: status.operation_id,
                wait: wait_of(reply),
            })
        }
        RegistrationStatus::Assigned => {
            let state = status.registration_state.ok_or_else(|| {
                Error::Protocol("an `assigned` status without a registration state".to_owned())
            })?;
            if state.assigned_hub.as_deref().unwrap_or_default().is_empty()
                || state.device_id.as_deref().unwrap_or_default().is_empty()
            {
                return Err(Error::Protocol(
                    "an `assigned` registration without a hub or device id".to_owned(),
                ));
            }
            Ok(Step::Assigned(Box::new(Assignment {
                operation_id: status.operation_id,
                state,
            })))
        }
        final_status @ (RegistrationStatus::Failed | RegistrationStatus::Disabled) => {
            let (error_code, message) = status
                .registration_state
                .map(|s| (s.error_code, s.error_message.unwrap_or_default()))
                .unwrap_or_default();
            Err(if final_status == RegistrationStatus::Disabled {
                Error::Disabled {
                    error_code,
                    message,
                }
            } else {
                Error::Failed {
                    error_code,
                    message,
                }
            })
        }
    }
}

/// The typed error for a 300–428 reply, from DPS's error body when it sent one.
fn refusal(reply: &Reply) -> Error {
    let details = serde_json::from_slice::<ErrorDetails>(&reply.body).ok();
    let error_code = details.as_ref().map(|d| d.error_code);
    let message = details.map(|d| d.message).unwrap_or_else(|| {
        // Not DPS's JSON: show a bounded, printable prefix of what came.
        String::from_utf8_lossy(&reply.body)
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect()
    });
    match reply.status {
        401 | 403 => Error::Unauthorized {
            error_code,
            message,
        },
        404 => Error::NotFound {
            error_code,
            message,
        },
        status => Error::Service {
            status,
            error_code,
            message,
        },
    }
}

/// Runs the flow on `exchange` until DPS gives a final answer. Unbounded in time: the caller
/// applies the overall timeout.
pub(crate) async fn run<E: Exchange>(exchange: &mut E, body: &[u8]) -> Result<Assignment> {
    let mut operation: Option<String> = None;
    loop {
        let reply = match &operation {
            None => exchange.register(body).await?,
            Some(id) => exchange.poll(id).await?,
        };
        match judge(&reply)? {
            Step::Assigned(result) => return Ok(*result),
            Step::Poll { operation_id, wait } => {
                operation = Some(operation_id);
                tokio::time::sleep(wait).await;
            }
            Step::Retry { wait } => tokio::time::sleep(wait).await,
        }
    }
}

#[cfg(test)]
mod tests;
