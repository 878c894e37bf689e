//! The hub operation the Device Provisioning Service calls on assignment (ADR 9): create or
//! update a device identity with the credentials its attestation proved, its IoT Edge flag and
//! its initial twin. It is reachable only from inside the process (no REST route).
//!
//! The operation is idempotent: DPS replays it when a device registers again after a crash
//! between the hub write and the DPS record. It ignores ETags (DPS owns the decision) and, on
//! an existing device, touches the twin only when asked to reset it.

use serde_json::{Value, json};

use super::HubState;
use super::error::HubError;
use super::identity::{IdentityBody, validate_id};
use super::state::now;
use crate::store::Change;

/// The credential a provisioned device uses at the hub.
#[derive(Clone)]
pub(crate) enum ProvisionedCredential {
    /// Symmetric key attestation: the (individual or derived group) key becomes the device's
    /// primary key; the secondary key is kept or generated.
    SymmetricKey(String),
    /// X.509 attestation: the leaf certificate's SHA-1 thumbprint (upper-case hex) becomes the
    /// device's primary thumbprint (`selfSigned`), so the same certificate opens the hub.
    Thumbprint(String),
}

impl std::fmt::Debug for ProvisionedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SymmetricKey(_) => f.write_str("SymmetricKey(<redacted>)"),
            Self::Thumbprint(t) => write!(f, "Thumbprint({t})"),
        }
    }
}

/// What DPS asks the hub to hold for an assigned device.
#[derive(Debug, Clone)]
pub(crate) struct ProvisionedDevice {
    /// The device id at the hub.
    pub(crate) device_id: String,
    /// How it authenticates.
    pub(crate) credential: ProvisionedCredential,
    /// `capabilities.iotEdge`.
    pub(crate) iot_edge: bool,
    /// `{tags, properties: {desired}}` to give the twin of a new device (or of an existing
    /// one when `reset_twin`).
    pub(crate) initial_twin: Option<Value>,
    /// Replace an existing device's tags and desired properties with `initial_twin`.
    pub(crate) reset_twin: bool,
}

impl HubState {
    /// Creates or updates the device identity `device` describes, enabled, stores it and makes
    /// it live. Returns whether the device was created.
    pub(crate) fn provision_device(&mut self, device: ProvisionedDevice) -> Result<bool, HubError> {
        validate_id("device", &device.device_id)?;
        let authentication = match &device.credential {
            ProvisionedCredential::SymmetricKey(key) => json!({
                "type": "sas",
                "symmetricKey": {"primaryKey": key},
            }),
            ProvisionedCredential::Thumbprint(thumbprint) => json!({
                "type": "selfSigned",
                "x509Thumbprint": {"primaryThumbprint": thumbprint},
            }),
        };
        let body: IdentityBody = serde_json::from_value(json!({
            "deviceId": device.device_id,
            "status": "enabled",
            "authentication": authentication,
            "capabilities": {"iotEdge": device.iot_edge},
        }))
        .map_err(|e| HubError::invalid(format!("the provisioned identity is invalid: {e}")))?;
        let spec = body.validate(&device.device_id, None)?;
        let existing = self.record(&device.device_id, None).ok().cloned();
        let created = existing.is_none();
        let mut record = match existing {
            Some(mut record) => {
                self.update_record(&mut record, spec)?;
                record
            }
            None => self.new_record(&device.device_id, None, spec)?,
        };
        if (created || device.reset_twin)
            && let Some(twin) = &device.initial_twin
        {
            record.twin.replace_from_service(twin, &now())?;
        }
        self.store.apply(&[Change::Put(&record)])?;
        self.install_identity(record);
        Ok(created)
    }
}
