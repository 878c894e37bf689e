//! What the DPS remembers of a TPM registration between its challenge and the signed request:
//! the EK and SRK the device sent and the identity key the challenge gave its TPM (a row of
//! `tpm_sessions` in `dps.db`, replaced by every new challenge so an older blob stops working).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::IdentityKey;
use crate::dps::store::{DpsStore, Table};
use crate::error::EmulatorError;

/// One registration's TPM keys (base64, as the device sent them) and its identity key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TpmSession {
    /// The registration id.
    pub(crate) registration_id: String,
    /// The EK, base64 `TPM2B_PUBLIC`.
    pub(crate) endorsement_key: String,
    /// The SRK, base64 `TPM2B_PUBLIC`.
    pub(crate) storage_root_key: String,
    /// The identity key of the last challenge, base64. Secret.
    identity_key: String,
}

impl TpmSession {
    /// A session for a challenge just built.
    pub(crate) fn new(
        registration_id: &str,
        endorsement_key: &[u8],
        storage_root_key: &[u8],
        identity_key: &IdentityKey,
    ) -> Self {
        Self {
            registration_id: registration_id.to_owned(),
            endorsement_key: STANDARD.encode(endorsement_key),
            storage_root_key: STANDARD.encode(storage_root_key),
            identity_key: STANDARD.encode(identity_key.as_bytes()),
        }
    }

    /// The identity key, base64 (the form SAS verification takes).
    pub(crate) fn identity_key_base64(&self) -> &str {
        &self.identity_key
    }

    /// The EK and SRK bytes.
    pub(crate) fn keys(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        Some((
            STANDARD.decode(&self.endorsement_key).ok()?,
            STANDARD.decode(&self.storage_root_key).ok()?,
        ))
    }
}

impl fmt::Debug for TpmSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmSession")
            .field("registration_id", &self.registration_id)
            .field("identity_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The sessions in `dps.db`, by lower-cased registration id.
pub(crate) fn load(store: &DpsStore) -> Result<BTreeMap<String, TpmSession>, EmulatorError> {
    Ok(store
        .rows::<TpmSession>(Table::TpmSessions)?
        .into_iter()
        .map(|s| (s.registration_id.to_ascii_lowercase(), s))
        .collect())
}
