//! Custom allocation: POST the `AllocationRequest` to the enrollment's webhook and read the
//! `AllocationResponse` it answers with.

use azure_iot_protocol::dps::enrollment::CustomAllocationDefinition;
use azure_iot_protocol::dps::registration::RegistrationResult;
use serde_json::Value;

use super::assign::Allocation;
use super::attestation::Source;
use super::records::code;
use super::{Dps, DpsError};

/// Asks the webhook; every failure is [`code::ALLOCATION_FAILED`].
pub(super) async fn allocate(
    dps: &Dps,
    webhook: &CustomAllocationDefinition,
    registration_id: &str,
    source: &Source,
    payload: Option<Value>,
    previous: Option<&RegistrationResult>,
) -> Result<Allocation, DpsError> {
    let _ = (dps, webhook, registration_id, source, payload, previous);
    Err(DpsError::new(
        code::ALLOCATION_FAILED,
        "custom allocation webhooks are not supported by this emulator yet",
    ))
}
