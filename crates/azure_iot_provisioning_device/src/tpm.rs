//! TPM attestation (feature `tpm`, `dps.md` §7.5): the device's TPM holds the keys.
//!
//! [`TpmAttestation::open`] opens the TPM (device file or simulator) and creates or reuses the
//! EK and SRK at their persistent handles; their `TPM2B_PUBLIC` bytes go to DPS base64 as
//! `tpm.endorsementKey` / `tpm.storageRootKey`, and the default registration id is derived
//! from the EK. DPS answers with an activation blob (the HTTPS 401 challenge, the SASL `TPM`
//! challenges, and the assigned registration's `tpm.authenticationKey`), which
//! [`TpmAttestation::activate`] runs through the TPM: `ActivateCredential` with the EK, `Import`
//! of the duplicated HMAC identity key under the SRK, `Load`, persist. Tokens are then signed
//! with `TPM2_HMAC` by that key; the key never leaves the TPM, and nothing here holds it.
//!
//! TPM calls block; they run on tokio's blocking pool, one at a time per TPM (a mutex).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use azure_iot_core::sas::{ResourceUri, SasToken};
use azure_iot_protocol::tpm::{ActivationBlob, default_registration_id};
use azure_iot_tpm::{Activation, Location, Tpm};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::{Error, Result};

/// A TPM that attests the device and signs its tokens. Cheap to clone (shared).
///
/// `Debug` shows where the TPM is and the EK's registration id, nothing secret.
#[derive(Clone)]
pub struct TpmAttestation {
    inner: Arc<Inner>,
}

struct Inner {
    tpm: Mutex<Tpm>,
    location: Location,
    endorsement_key: Vec<u8>,
    storage_root_key: Vec<u8>,
}

impl fmt::Debug for TpmAttestation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmAttestation")
            .field("location", &self.inner.location)
            .field("registration_id", &self.registration_id())
            .finish()
    }
}

impl TpmAttestation {
    /// Opens the TPM at `location`, starts it if needed, and creates (and persists) or reuses
    /// the EK at `0x81010001` and the SRK at `0x81000001`.
    ///
    /// Errors: [`Error::Tpm`] naming the step (a TPM that is not there, or refuses).
    pub async fn open(location: Location) -> Result<Self> {
        let at = location.clone();
        let (tpm, endorsement_key, storage_root_key) = blocking(move || {
            let mut tpm = Tpm::open(&at).map_err(tpm_error("opening the TPM"))?;
            let ek = tpm
                .endorsement_key()
                .map_err(tpm_error("creating or reading the endorsement key"))?;
            let srk = tpm
                .storage_root_key()
                .map_err(tpm_error("creating or reading the storage root key"))?;
            Ok((tpm, ek.public, srk.public))
        })
        .await?;
        Ok(Self {
            inner: Arc::new(Inner {
                tpm: Mutex::new(tpm),
                location,
                endorsement_key,
                storage_root_key,
            }),
        })
    }

    /// The EK's `TPM2B_PUBLIC`, as DPS takes it.
    pub fn endorsement_key(&self) -> &[u8] {
        &self.inner.endorsement_key
    }

    /// The EK's `TPM2B_PUBLIC` in base64: what an individual enrollment's
    /// `attestation.tpm.endorsementKey` holds.
    pub fn endorsement_key_base64(&self) -> String {
        STANDARD.encode(&self.inner.endorsement_key)
    }

    /// The SRK's `TPM2B_PUBLIC`.
    pub fn storage_root_key(&self) -> &[u8] {
        &self.inner.storage_root_key
    }

    /// The SRK's `TPM2B_PUBLIC` in base64.
    pub fn storage_root_key_base64(&self) -> String {
        STANDARD.encode(&self.inner.storage_root_key)
    }

    /// The registration id derived from the EK (the Node SDK's rule: lowercase base32 of
    /// SHA-256 of the EK, no padding).
    pub fn registration_id(&self) -> String {
        default_registration_id(&self.inner.endorsement_key)
    }

    /// Runs a DPS activation blob (base64, as DPS sends `authenticationKey`) through the TPM:
    /// the identity key DPS wrapped is imported and persisted at `0x81000100`, replacing the
    /// previous one.
    ///
    /// Errors: [`Error::Protocol`] for a blob that does not parse, [`Error::Tpm`] naming the
    /// TPM step that refused it.
    pub async fn activate(&self, authentication_key: &str) -> Result<()> {
        let bytes = STANDARD
            .decode(authentication_key.trim())
            .map_err(|_| Error::Protocol("DPS's authenticationKey is not base64".to_owned()))?;
        self.activate_bytes(&bytes).await
    }

    /// [`activate`](Self::activate) with the blob's bytes (as the SASL `TPM` challenges carry
    /// it).
    pub(crate) async fn activate_bytes(&self, bytes: &[u8]) -> Result<()> {
        let blob = ActivationBlob::parse(bytes)
            .map_err(|e| Error::Protocol(format!("DPS's activation blob does not parse: {e}")))?;
        let inner = self.inner.clone();
        blocking(move || {
            let mut tpm = lock(&inner)?;
            tpm.install_identity_key(&Activation {
                credential_blob: &blob.credential_blob,
                secret: &blob.encrypted_secret,
                duplicate: &blob.duplicate,
                encrypted_seed: &blob.encrypted_seed,
                public: &blob.identity_public,
            })
            .map_err(tpm_error("activating DPS's identity key"))
        })
        .await
    }

    /// A SAS token for `resource` living `ttl`, signed inside the TPM by the identity key.
    pub(crate) async fn token(
        &self,
        resource: ResourceUri,
        key_name: Option<&'static str>,
        ttl: Duration,
    ) -> Result<String> {
        let inner = self.inner.clone();
        let expires_at = SystemTime::now() + ttl;
        blocking(move || {
            let mut tpm = lock(&inner)?;
            SasToken::generate_with_signer(&resource, key_name, expires_at, |message| {
                tpm.identity_hmac(message)
            })
            .map(|token| token.secret().to_owned())
            .map_err(tpm_error("signing the SAS token"))
        })
        .await
    }

    /// A token provider for a hub device client with the identity `{hub}/devices/{device_id}`:
    /// every token it is asked for (the first connection, each reconnection and each renewal
    /// at 85 % of the previous token's life) is signed inside the TPM and lives `ttl`.
    /// [`RegistrationResult::device_client`](crate::RegistrationResult::device_client) uses
    /// it with [`ClientOptions::token_lifetime`](azure_iot_device::ClientOptions::token_lifetime);
    /// it is public for clients built another way (a gateway, a module).
    pub fn hub_token_provider(
        &self,
        hub: &str,
        device_id: &str,
        ttl: Duration,
    ) -> impl azure_iot_device::TokenProvider + use<> {
        let resource = ResourceUri::device(hub, device_id);
        let tpm = self.clone();
        move || {
            let tpm = tpm.clone();
            let resource = resource.clone();
            async move { tpm.token(resource, None, ttl).await }
        }
    }
}

/// The TPM behind `inner`, one caller at a time.
fn lock(inner: &Inner) -> Result<std::sync::MutexGuard<'_, Tpm>> {
    inner.tpm.lock().map_err(|_| Error::Tpm {
        step: "locking the TPM",
        source: Box::new(std::io::Error::other(
            "an earlier TPM call panicked while holding it",
        )),
    })
}

/// Runs a blocking TPM call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| Error::Tpm {
            step: "running a TPM call",
            source: Box::new(e),
        })?
}

/// Maps a TPM error to [`Error::Tpm`] for `step`.
fn tpm_error(step: &'static str) -> impl Fn(azure_iot_tpm::Error) -> Error {
    move |e| Error::Tpm {
        step,
        source: Box::new(e),
    }
}
