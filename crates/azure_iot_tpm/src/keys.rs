//! The keys of DPS TPM attestation at the persistent handles the Node and C SDKs use
//! (`dps.md` §7.5): the EK at [`EK_HANDLE`], the SRK at [`SRK_HANDLE`], the imported HMAC
//! identity key at [`IDENTITY_KEY_HANDLE`]; created when missing, reused when present.

use crate::error::Result;
use crate::templates::{ek_template, srk_template};
use crate::tpm::{AesCfb, PublicKey, RH_ENDORSEMENT, RH_OWNER, SecretBytes, Tpm};

/// The storage root key's persistent handle.
pub const SRK_HANDLE: u32 = 0x8100_0001;
/// The endorsement key's persistent handle.
pub const EK_HANDLE: u32 = 0x8101_0001;
/// The imported identity (HMAC) key's persistent handle.
pub const IDENTITY_KEY_HANDLE: u32 = 0x8100_0100;

/// `TPM_RC_HANDLE` without its handle number: nothing at that handle.
const RC_HANDLE: u32 = 0x08B;

/// The parts of a DPS activation blob the TPM consumes, each the contents of its `TPM2B`.
#[derive(Debug, Clone, Copy)]
pub struct Activation<'a> {
    /// `TPM2B_ID_OBJECT`: the credential, sealed to the EK and bound to the SRK's Name.
    pub credential_blob: &'a [u8],
    /// `TPM2B_ENCRYPTED_SECRET`: the credential's seed, encrypted to the EK.
    pub secret: &'a [u8],
    /// `TPM2B_PRIVATE`: the identity key, duplicated to the SRK.
    pub duplicate: &'a [u8],
    /// `TPM2B_ENCRYPTED_SECRET`: the duplication seed, encrypted to the SRK.
    pub encrypted_seed: &'a [u8],
    /// `TPM2B_PUBLIC`: the identity key's public area.
    pub public: &'a [u8],
}

impl Tpm {
    /// The EK (TCG default RSA template) at [`EK_HANDLE`], created and persisted if absent.
    pub fn endorsement_key(&mut self) -> Result<PublicKey> {
        self.persistent_primary(EK_HANDLE, RH_ENDORSEMENT, &ek_template())
    }

    /// The SRK at [`SRK_HANDLE`], created and persisted if absent.
    pub fn storage_root_key(&mut self) -> Result<PublicKey> {
        self.persistent_primary(SRK_HANDLE, RH_OWNER, &srk_template())
    }

    /// Whether an object lives at `handle`.
    pub fn exists(&mut self, handle: u32) -> Result<bool> {
        match self.read_public(handle) {
            Ok(_) => Ok(true),
            Err(e) if e.response_code().map(|c| c.base()) == Some(RC_HANDLE) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The key at `handle`, or a new primary key from `template` persisted there.
    fn persistent_primary(
        &mut self,
        handle: u32,
        hierarchy: u32,
        template: &[u8],
    ) -> Result<PublicKey> {
        if self.exists(handle)? {
            return self.read_public(handle);
        }
        let (transient, public) = self.create_primary(hierarchy, template)?;
        let persisted = self.evict_control(transient, handle);
        let flushed = self.flush_context(transient);
        persisted?;
        flushed?;
        Ok(public)
    }

    /// `TPM2_ActivateCredential` with the persistent EK (through its
    /// `PolicySecret(TPM_RH_ENDORSEMENT)` policy) for an object named like the SRK: the
    /// credential DPS sealed.
    pub fn activate_with_ek(
        &mut self,
        credential_blob: &[u8],
        secret: &[u8],
    ) -> Result<SecretBytes> {
        let session = self.start_policy_session()?;
        let activated = self.policy_secret_endorsement(session).and_then(|()| {
            self.activate_credential(SRK_HANDLE, EK_HANDLE, session, credential_blob, secret)
        });
        if activated.is_err() {
            // A successful command ends the session (continueSession clear); a failed one
            // leaves it.
            let _ = self.flush_context(session);
        }
        activated
    }

    /// Runs a DPS activation: activates the credential (the inner wrap key), imports the
    /// duplicated identity key under the SRK with an AES-CFB inner wrapper of that key's
    /// size, loads it and persists it at [`IDENTITY_KEY_HANDLE`] (replacing a previous one).
    /// The key never leaves the TPM.
    pub fn install_identity_key(&mut self, activation: &Activation<'_>) -> Result<()> {
        let inner_key = self.activate_with_ek(activation.credential_blob, activation.secret)?;
        let inner = inner_wrapper(inner_key.expose().len())?;
        let private = self.import(
            SRK_HANDLE,
            inner_key.expose(),
            activation.public,
            activation.duplicate,
            activation.encrypted_seed,
            inner,
        )?;
        let loaded = self.load(SRK_HANDLE, &private, activation.public)?;
        let persisted = self.replace_identity_key(loaded);
        let flushed = self.flush_context(loaded);
        persisted?;
        flushed
    }

    /// Persists the loaded `object` at [`IDENTITY_KEY_HANDLE`], evicting what was there.
    fn replace_identity_key(&mut self, object: u32) -> Result<()> {
        if self.exists(IDENTITY_KEY_HANDLE)? {
            self.evict_control(IDENTITY_KEY_HANDLE, IDENTITY_KEY_HANDLE)?;
        }
        self.evict_control(object, IDENTITY_KEY_HANDLE)
    }

    /// HMAC-SHA256 of `data` with the persisted identity key, inside the TPM.
    pub fn identity_hmac(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        self.hmac(IDENTITY_KEY_HANDLE, data)
    }
}

/// The inner wrapper for a wrap key of `len` bytes: AES-CFB with 8 × `len` bits; none for an
/// empty key.
fn inner_wrapper(len: usize) -> Result<Option<AesCfb>> {
    match len {
        0 => Ok(None),
        16 | 24 | 32 => Ok(Some(AesCfb {
            key_bits: (len * 8) as u16,
        })),
        other => Err(crate::error::Error::Malformed {
            what: "activated credential",
            detail: format!("a {other}-byte inner wrap key is no AES key size"),
        }),
    }
}
