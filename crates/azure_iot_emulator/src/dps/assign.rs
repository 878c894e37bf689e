//! Allocation and assignment: which hub and device id a registration gets, and the hub
//! identity that goes with it (ADR 9: the hub first, the DPS record after).
//!
//! The emulator links one hub, its own. `static` and `hashed` (and `geoLatency`) allocation
//! pick it when the enrollment's `iotHubs` (or `iotHubHostName`) are empty or name it; a list
//! without it fails with 400208. `custom` asks the enrollment's webhook (`webhook`).
//!
//! Reprovisioning, when an assigned registration registers again (one linked hub, so the hub
//! never changes): `updateHubAssignment: false` keeps everything and reports the previous
//! substatus; `migrateDeviceData: true` keeps the twin (`deviceDataMigrated`); `false` resets
//! tags and desired properties to the initial twin (`deviceDataReset`). The hub identity's
//! credential is refreshed in every case, so the key or certificate the device just proved
//! opens the hub.

use azure_iot_protocol::dps::InitialTwin;
use azure_iot_protocol::dps::enrollment::{AllocationPolicy, ReprovisionPolicy};
use azure_iot_protocol::dps::registration::{
    RegistrationResult, RegistrationStatus, RegistrationSubstatus, SymmetricKeyRegistrationResult,
};
use serde_json::Value;

use super::attestation::{Attested, Source};
use super::records::{RegistrationRecord, code};
use super::{Dps, DpsError};
use crate::hub::provision::{ProvisionedCredential, ProvisionedDevice};

/// The enrollment settings an assignment reads, from an individual enrollment or a group.
struct Settings<'a> {
    enabled: bool,
    device_id: Option<&'a str>,
    initial_twin: Option<&'a InitialTwin>,
    iot_edge: bool,
    reprovision: ReprovisionPolicy,
    allocation: Option<AllocationPolicy>,
    hubs: Vec<&'a str>,
    webhook: Option<&'a azure_iot_protocol::dps::enrollment::CustomAllocationDefinition>,
}

fn settings(source: &Source) -> Settings<'_> {
    use azure_iot_protocol::dps::enrollment::ProvisioningStatus::Enabled;
    let (shared, device_id) = match source {
        Source::Individual(e) => (
            &e.settings,
            e.device_id.as_deref().filter(|d| !d.is_empty()),
        ),
        Source::Group(g) => (&g.settings, None),
    };
    Settings {
        enabled: shared.provisioning_status == Enabled,
        device_id,
        initial_twin: shared.initial_twin.as_ref(),
        iot_edge: shared.capabilities.is_some_and(|c| c.iot_edge),
        reprovision: shared.reprovision_policy.unwrap_or_default(),
        allocation: shared.allocation_policy,
        hubs: hubs(
            shared.iot_hubs.as_deref(),
            shared.iot_hub_host_name.as_deref(),
        ),
        webhook: shared.custom_allocation_definition.as_ref(),
    }
}

fn hubs<'a>(list: Option<&'a [String]>, single: Option<&'a str>) -> Vec<&'a str> {
    list.unwrap_or_default()
        .iter()
        .map(String::as_str)
        .chain(single)
        .filter(|h| !h.is_empty())
        .collect()
}

/// What allocation decided.
pub(super) struct Allocation {
    /// The device id at the hub.
    pub(super) device_id: String,
    /// The twin a new (or reset) device gets.
    pub(super) initial_twin: Option<InitialTwin>,
    /// Data for the device's registration result.
    pub(super) payload: Option<Value>,
}

impl Dps {
    /// Runs the assignment of an attested registration and returns its final state
    /// (`assigned`, `failed` or `disabled`). Errors are for failures of the emulator itself
    /// (the hub gone); a registration that cannot be assigned is a `failed` state, and then
    /// nothing was written to the hub.
    pub(super) async fn assign(
        &self,
        registration_id: &str,
        attested: &Attested,
        payload: Option<Value>,
        previous: Option<&RegistrationRecord>,
    ) -> Result<RegistrationResult, DpsError> {
        let settings = settings(&attested.source);
        let mut state = RegistrationResult::new(registration_id, RegistrationStatus::Assigned);
        state.x509 = attested.x509.clone();
        if let (Some(group), ProvisionedCredential::SymmetricKey(_)) =
            (attested.group_id(), &attested.credential)
        {
            state.symmetric_key = Some(SymmetricKeyRegistrationResult {
                enrollment_group_id: Some(group.to_owned()),
            });
        }
        if !settings.enabled {
            state.status = RegistrationStatus::Disabled;
            return Ok(state);
        }
        let hub = self.info.hub_hostname.clone();
        let previous = previous
            .map(|r| &r.state)
            .filter(|s| s.status == RegistrationStatus::Assigned && s.device_id.is_some());
        let (substatus, reset) = match previous {
            None => (RegistrationSubstatus::InitialAssignment, false),
            Some(p) if !settings.reprovision.update_hub_assignment => (
                p.substatus
                    .unwrap_or(RegistrationSubstatus::InitialAssignment),
                false,
            ),
            Some(_) if settings.reprovision.migrate_device_data => {
                (RegistrationSubstatus::DeviceDataMigrated, false)
            }
            Some(_) => (RegistrationSubstatus::DeviceDataReset, true),
        };
        let allocation = match (previous, settings.reprovision.update_hub_assignment) {
            // Never re-provisioned: the device keeps its device id and payload.
            (Some(p), false) => Allocation {
                device_id: p
                    .device_id
                    .clone()
                    .unwrap_or_else(|| registration_id.to_owned()),
                initial_twin: settings.initial_twin.cloned(),
                payload: p.payload.clone(),
            },
            _ => match self
                .allocate(registration_id, attested, &settings, payload, previous)
                .await
            {
                Ok(allocation) => allocation,
                Err(failure) => return Ok(failed(state, failure)),
            },
        };
        let initial_twin = allocation
            .initial_twin
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok());
        let device = ProvisionedDevice {
            device_id: allocation.device_id.clone(),
            credential: attested.credential.clone(),
            iot_edge: settings.iot_edge,
            initial_twin,
            reset_twin: reset,
        };
        match self.hub.call(move |h| h.provision_device(device)).await? {
            Ok(_) => {}
            Err(e) => {
                return Ok(failed(
                    state,
                    DpsError::new(
                        code::NO_HUB,
                        format!("the hub refused the device identity: {}", e.message),
                    ),
                ));
            }
        }
        state.assigned_hub = Some(hub);
        state.device_id = Some(allocation.device_id);
        state.substatus = Some(substatus);
        state.payload = allocation.payload;
        Ok(state)
    }

    /// Picks the hub and device id: the linked hub for `static`, `hashed` and `geoLatency`;
    /// the webhook's answer for `custom`.
    async fn allocate(
        &self,
        registration_id: &str,
        attested: &Attested,
        settings: &Settings<'_>,
        payload: Option<Value>,
        previous: Option<&RegistrationResult>,
    ) -> Result<Allocation, DpsError> {
        let hub = &self.info.hub_hostname;
        if !settings.hubs.is_empty() && !settings.hubs.iter().any(|h| h.eq_ignore_ascii_case(hub)) {
            return Err(DpsError::new(
                code::NO_HUB,
                format!(
                    "none of the enrollment's hubs is linked to this provisioning service (only {hub} is)"
                ),
            ));
        }
        if settings.allocation == Some(AllocationPolicy::Custom) {
            let webhook = settings.webhook.ok_or_else(|| {
                DpsError::new(
                    code::ALLOCATION_FAILED,
                    "custom allocation needs a customAllocationDefinition",
                )
            })?;
            return super::webhook::allocate(
                self,
                webhook,
                registration_id,
                &attested.source,
                payload,
                previous,
            )
            .await;
        }
        Ok(Allocation {
            device_id: settings.device_id.unwrap_or(registration_id).to_owned(),
            initial_twin: settings.initial_twin.cloned(),
            payload: None,
        })
    }
}

/// A `failed` state carrying `error`'s code and message.
fn failed(mut state: RegistrationResult, error: DpsError) -> RegistrationResult {
    state.status = RegistrationStatus::Failed;
    state.error_code = Some(error.details.error_code);
    state.error_message = Some(error.details.message);
    state.assigned_hub = None;
    state.device_id = None;
    state
}
