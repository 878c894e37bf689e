//! The TPM steps of the registration flow the HTTPS and AMQP front-ends share: the challenge
//! (an activation blob for a new identity key, kept in a [`TpmSession`]) and the activation
//! blob of the hub key that an assigned TPM registration returns.

use azure_iot_protocol::dps::enrollment::AttestationType;
use azure_iot_protocol::dps::registration::TpmRegistration;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::session::TpmSession;
use super::{IdentityKey, TpmAttestationError, activation_blob};
use crate::dps::state::DpsState;
use crate::dps::{Dps, DpsError};

impl Dps {
    /// A TPM device's first request (no credential, its EK and SRK in `tpm`): checks that an
    /// individual TPM enrollment of `registration_id` holds this EK, gives the TPM a new
    /// identity key and returns the activation blob (base64) to answer with. The new key
    /// replaces any earlier one.
    pub(crate) async fn tpm_challenge(
        &self,
        id_scope: &str,
        registration_id: &str,
        tpm: &TpmRegistration,
    ) -> Result<String, DpsError> {
        let ek = decode("endorsementKey", &tpm.endorsement_key)?;
        let srk = decode(
            "storageRootKey",
            tpm.storage_root_key
                .as_deref()
                .ok_or_else(|| DpsError::invalid("a TPM registration needs the storageRootKey"))?,
        )?;
        self.check_tpm_enrolled(id_scope, registration_id, &ek)
            .await?;
        let key = IdentityKey::generate().map_err(DpsError::internal)?;
        let blob = activation_blob(&ek, &srk, &key)
            .and_then(|b| Ok(b.to_bytes()?))
            .map_err(refused)?;
        let session = TpmSession::new(registration_id, &ek, &srk, &key);
        self.actor
            .call(move |s| s.save_tpm_session(session))
            .await??;
        Ok(STANDARD.encode(blob))
    }
}

impl Dps {
    /// Fails unless `id_scope` is ours and `registration_id` has an individual TPM enrollment
    /// holding the EK `ek` (404, 400 or 401).
    pub(crate) async fn check_tpm_enrolled(
        &self,
        id_scope: &str,
        registration_id: &str,
        ek: &[u8],
    ) -> Result<(), DpsError> {
        self.check_scope(id_scope)?;
        crate::dps::state::validate_id("registration", registration_id)?;
        let id = registration_id.to_owned();
        let ek = ek.to_vec();
        self.actor
            .call(move |s| s.check_tpm_enrollment(&id, &ek))
            .await?
    }
}

/// A new hub key (base64) for an attested TPM registration and its activation blob (base64) for
/// the session's TPM.
pub(crate) fn hub_key_blob(session: &TpmSession) -> Result<(String, String), DpsError> {
    let (ek, srk) = session
        .keys()
        .ok_or_else(|| DpsError::internal("a stored TPM session is unreadable"))?;
    let key = IdentityKey::generate().map_err(DpsError::internal)?;
    let blob = activation_blob(&ek, &srk, &key)
        .and_then(|b| Ok(b.to_bytes()?))
        .map_err(refused)?;
    Ok((STANDARD.encode(key.as_bytes()), STANDARD.encode(blob)))
}

impl DpsState {
    /// Fails unless `registration_id` has an individual TPM enrollment whose EK is `ek`.
    pub(crate) fn check_tpm_enrollment(
        &self,
        registration_id: &str,
        ek: &[u8],
    ) -> Result<(), DpsError> {
        let enrollment = self
            .enrollments
            .get(&registration_id.to_ascii_lowercase())
            .ok_or_else(|| {
                DpsError::unauthorized("no individual enrollment has this registration id")
            })?;
        let enrolled = enrollment
            .attestation
            .tpm
            .as_ref()
            .filter(|_| enrollment.attestation.kind == AttestationType::Tpm)
            .ok_or_else(|| {
                DpsError::unauthorized("the registration's enrollment does not use a TPM")
            })?;
        match STANDARD.decode(&enrolled.endorsement_key) {
            Ok(bytes) if bytes == ek => Ok(()),
            _ => Err(DpsError::unauthorized(
                "the endorsement key is not the enrollment's",
            )),
        }
    }
}

fn decode(what: &str, text: &str) -> Result<Vec<u8>, DpsError> {
    STANDARD
        .decode(text.trim())
        .map_err(|_| DpsError::invalid(format!("the TPM {what} is not base64")))
}

/// A key the blob cannot be built for: 400 naming the key and what is wrong.
fn refused(e: TpmAttestationError) -> DpsError {
    match e {
        TpmAttestationError::Random => DpsError::internal(e),
        e => DpsError::invalid(e.to_string()),
    }
}
