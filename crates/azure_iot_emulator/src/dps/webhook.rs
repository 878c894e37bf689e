//! Custom allocation: POST the `AllocationRequest` to the enrollment's webhook and read the
//! `AllocationResponse` it answers with.
//!
//! The call is bounded: the webhook timeout (`dps_webhook_timeout`, 5 s by default) covers
//! connecting, sending and reading, the answer may be at most [`MAX_ANSWER_BYTES`], and
//! redirects are not followed. Every failure (unreachable, timeout, non-2xx, too large, not an
//! `AllocationResponse`, a hub that is not linked, a bad device id) makes the registration
//! `failed` with [`code::ALLOCATION_FAILED`] and nothing written to the hub. The request never
//! carries the enrollment's symmetric keys.
//!
//! TLS: the webhook's certificate must chain to the emulator's CA (`ca.pem`), so a local
//! function can serve with a certificate `azure-iot` issues; plain `http://` URLs are accepted
//! for local webhooks.

use std::time::Duration;

use azure_iot_protocol::dps::enrollment::{
    AllocationRequest, AllocationResponse, CustomAllocationDefinition, DeviceRuntimeContext,
};
use azure_iot_protocol::dps::registration::RegistrationResult;
use serde_json::{Map, Value};

use super::assign::Allocation;
use super::attestation::Source;
use super::records::code;
use super::{Dps, DpsError};

/// The largest webhook answer read.
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The HTTP client webhooks are called with: trusts the emulator's CA, no redirects, the
/// webhook timeout.
pub(crate) fn client(ca_pem: &str, timeout: Duration) -> Result<reqwest::Client, String> {
    crate::net::https_client(ca_pem, false, timeout)
}

/// Asks the webhook; every failure is [`code::ALLOCATION_FAILED`].
pub(super) async fn allocate(
    dps: &Dps,
    webhook: &CustomAllocationDefinition,
    registration_id: &str,
    source: &Source,
    payload: Option<Value>,
    previous: Option<&RegistrationResult>,
) -> Result<Allocation, DpsError> {
    let failed = |why: String| {
        DpsError::new(
            code::ALLOCATION_FAILED,
            format!("the custom allocation webhook failed: {why}"),
        )
    };
    let (mut individual_enrollment, mut enrollment_group) = (None, None);
    match source {
        Source::Individual(e) => {
            let mut e = (**e).clone();
            e.attestation.symmetric_key = None;
            e.registration_state = None;
            individual_enrollment = Some(e);
        }
        Source::Group(g) => {
            let mut g = (**g).clone();
            g.attestation.symmetric_key = None;
            enrollment_group = Some(g);
        }
    }
    let hub = dps.info.hub_hostname.clone();
    let request = AllocationRequest {
        individual_enrollment,
        enrollment_group,
        device_runtime_context: DeviceRuntimeContext {
            registration_id: registration_id.to_owned(),
            current_iot_hub_host_name: previous.and_then(|p| p.assigned_hub.clone()),
            current_device_id: previous.and_then(|p| p.device_id.clone()),
            payload,
            other: Map::new(),
        },
        linked_hubs: vec![hub.clone()],
    };
    let answer = call(dps, &webhook.webhook_url, &request)
        .await
        .map_err(failed)?;
    let answer: AllocationResponse = serde_json::from_slice(&answer)
        .map_err(|e| failed(format!("its answer is not an AllocationResponse: {e}")))?;
    if !answer.iot_hub_host_name.eq_ignore_ascii_case(&hub) {
        return Err(failed(format!(
            "it chose `{}`, which is not a linked hub (only {hub} is)",
            answer.iot_hub_host_name
        )));
    }
    let device_id = answer
        .device_id
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| registration_id.to_owned());
    crate::hub::identity::validate_id("device", &device_id)
        .map_err(|e| failed(format!("it chose an invalid device id: {}", e.message)))?;
    Ok(Allocation {
        device_id,
        initial_twin: answer.initial_twin,
        payload: answer.payload,
    })
}

/// POSTs `request` to `url` and returns the body of a 2xx answer (at most
/// [`MAX_ANSWER_BYTES`]).
async fn call(dps: &Dps, url: &str, request: &AllocationRequest) -> Result<Vec<u8>, String> {
    let body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    let mut response = dps
        .webhooks
        .post(url)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "it did not answer in time".to_owned()
            } else {
                format!("it could not be reached: {}", e.without_url())
            }
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("it answered {status}"));
    }
    let mut answer = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        if e.is_timeout() {
            "it did not answer in time".to_owned()
        } else {
            format!("its answer broke off: {}", e.without_url())
        }
    })? {
        if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!("its answer exceeds {MAX_ANSWER_BYTES} bytes"));
        }
        answer.extend_from_slice(&chunk);
    }
    Ok(answer)
}
