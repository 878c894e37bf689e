//! [`RegistrationResult`]: what DPS assigned, and the one call that turns it into a connected
//! [`DeviceClient`].

use std::fmt;

use azure_iot_core::sas::SharedAccessKey;
use azure_iot_device::{ClientOptions, DeviceClient, X509Certificate};
use azure_iot_protocol::dps::registration::{
    RegistrationResult as State, RegistrationStatus, RegistrationSubstatus,
};
use serde_json::Value;

use crate::attestation::Attestation;
use crate::error::{Error, Result};

/// How the provisioned device authenticates at its hub: the attestation's key (for a group,
/// the derived key DPS gave the hub identity) or certificate.
#[derive(Clone)]
pub enum HubCredential {
    /// The device's symmetric key.
    SymmetricKey(SharedAccessKey),
    /// The device's X.509 certificate.
    X509(X509Certificate),
    /// None usable: the device attested with a ready-made token, which is for DPS only.
    None,
    /// The device's TPM, holding the identity key DPS gave the hub (tokens are signed inside
    /// it).
    #[cfg(feature = "tpm")]
    Tpm(crate::tpm::TpmAttestation),
}

impl fmt::Debug for HubCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SymmetricKey(_) => f.write_str("SymmetricKey(<redacted>)"),
            Self::X509(cert) => f.debug_tuple("X509").field(cert).finish(),
            Self::None => f.write_str("None"),
            #[cfg(feature = "tpm")]
            Self::Tpm(tpm) => f.debug_tuple("Tpm").field(tpm).finish(),
        }
    }
}

/// A finished, assigned registration: the hub, the device id, DPS's record of it, and the
/// credential to connect with.
///
/// `Debug` shows no key.
#[derive(Debug, Clone)]
pub struct RegistrationResult {
    operation_id: String,
    assigned_hub: String,
    device_id: String,
    state: State,
    credential: HubCredential,
}

impl RegistrationResult {
    /// An assigned `state` (hub and device id checked present by the flow) for a device that
    /// attested with `attestation`.
    pub(crate) fn new(
        operation_id: String,
        state: State,
        attestation: &Attestation,
    ) -> Result<Self> {
        let assigned_hub = state.assigned_hub.clone().unwrap_or_default();
        let device_id = state.device_id.clone().unwrap_or_default();
        if assigned_hub.is_empty() || device_id.is_empty() {
            return Err(Error::Protocol(
                "an assignment without a hub or device id".to_owned(),
            ));
        }
        let credential = match attestation {
            Attestation::X509(cert) => HubCredential::X509(cert.clone()),
            #[cfg(feature = "tpm")]
            Attestation::Tpm(tpm) => HubCredential::Tpm(tpm.clone()),
            other => other
                .device_key(&state.registration_id)
                .map_or(HubCredential::None, HubCredential::SymmetricKey),
        };
        Ok(Self {
            operation_id,
            assigned_hub,
            device_id,
            state,
            credential,
        })
    }

    /// The id of the operation whose status was the assignment (empty when DPS assigned the
    /// device in its first answer without naming an operation).
    pub fn operation_id(&self) -> &str {
        &self.operation_id
    }

    /// The host name of the hub DPS assigned the device to.
    pub fn assigned_hub(&self) -> &str {
        &self.assigned_hub
    }

    /// The device id at that hub.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The registration id.
    pub fn registration_id(&self) -> &str {
        &self.state.registration_id
    }

    /// The registration's status (always [`RegistrationStatus::Assigned`] here).
    pub fn status(&self) -> RegistrationStatus {
        self.state.status
    }

    /// What the assignment did (first assignment, data migrated or reset).
    pub fn substatus(&self) -> Option<RegistrationSubstatus> {
        self.state.substatus
    }

    /// Data the custom allocation webhook returned for the device.
    pub fn payload(&self) -> Option<&Value> {
        self.state.payload.as_ref()
    }

    /// The registration record's ETag.
    pub fn etag(&self) -> Option<&str> {
        self.state.etag.as_deref()
    }

    /// When the device first registered (UTC, ISO 8601).
    pub fn created_date_time_utc(&self) -> Option<&str> {
        self.state.created_date_time_utc.as_deref()
    }

    /// When the registration last changed (UTC, ISO 8601).
    pub fn last_updated_date_time_utc(&self) -> Option<&str> {
        self.state.last_updated_date_time_utc.as_deref()
    }

    /// The enrollment group the registration matched, if it was a group's.
    pub fn enrollment_group_id(&self) -> Option<&str> {
        let from_key = self
            .state
            .symmetric_key
            .as_ref()
            .and_then(|k| k.enrollment_group_id.as_deref());
        let from_x509 = self
            .state
            .x509
            .as_ref()
            .and_then(|x| x.enrollment_group_id.as_deref());
        from_key.or(from_x509)
    }

    /// DPS's whole registration record, as sent.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The credential the device connects to its hub with.
    pub fn credential(&self) -> &HubCredential {
        &self.credential
    }

    /// A device connection string (`HostName=…;DeviceId=…;SharedAccessKey=…`) for a device
    /// with a key; `None` for X.509 or a ready-made token. It holds the key: treat it as a
    /// secret.
    pub fn connection_string(&self) -> Option<String> {
        match &self.credential {
            HubCredential::SymmetricKey(key) => Some(format!(
                "HostName={};DeviceId={};SharedAccessKey={}",
                self.assigned_hub,
                self.device_id,
                key.to_base64()
            )),
            _ => None,
        }
    }

    /// Connects to the assigned hub as the provisioned device: a [`DeviceClient`] with the
    /// same key (for a group, the derived one), the same certificate, or (TPM) SAS tokens
    /// signed inside the TPM by the key DPS gave it, each renewal signed again; and `options`
    /// (set the transport, and for an emulator its port and trusted roots, there).
    ///
    /// Fails with [`Error::InvalidArgument`] for a device that attested with a ready-made
    /// token (nothing to sign hub tokens with), and [`Error::DeviceClient`] when the hub
    /// refuses.
    pub async fn device_client(&self, options: ClientOptions) -> Result<DeviceClient> {
        let client = match &self.credential {
            HubCredential::SymmetricKey(key) => {
                DeviceClient::from_symmetric_key(
                    &self.assigned_hub,
                    &self.device_id,
                    None,
                    &key.to_base64(),
                    options,
                )
                .await
            }
            HubCredential::X509(cert) => {
                DeviceClient::from_x509(&self.assigned_hub, &self.device_id, None, cert, options)
                    .await
            }
            #[cfg(feature = "tpm")]
            HubCredential::Tpm(tpm) => {
                DeviceClient::from_token_provider(
                    &self.assigned_hub,
                    &self.device_id,
                    None,
                    tpm.hub_token_provider(
                        &self.assigned_hub,
                        &self.device_id,
                        options.token_lifetime(),
                    ),
                    options,
                )
                .await
            }
            HubCredential::None => {
                return Err(Error::InvalidArgument(
                    "the device attested with a SAS token: it has no key for the hub".to_owned(),
                ));
            }
        };
        client.map_err(Error::DeviceClient)
    }
}
