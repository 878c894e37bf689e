//! The DPS side of TPM attestation (ADR 0023): activation blobs that give a device's TPM a
//! fresh HMAC identity key, readable only by the TPM holding the enrolled endorsement key.
//!
//! An [`ActivationBlob`] is two TPM 2.0 constructions (TPM 2.0 Library, Part 1), built here
//! from the public areas alone:
//!
//! ```text
//!   inner key  = 16 random bytes (AES-128)
//!   identity   = keyed-hash HMAC-SHA256 object: TPMT_SENSITIVE { seedValue, key }
//!   duplicate  = outer-wrap( CFB_innerKey( TPM2B(H(sensitive || Name(id))) || sensitive ) )
//!                with a seed RSA-OAEP encrypted to the SRK, label "DUPLICATE\0"
//!   credential = outer-wrap( TPM2B(inner key) ) bound to Name(SRK)
//!                with a seed RSA-OAEP encrypted to the EK, label "IDENTITY\0"
//!   outer-wrap(x, name, seed, parent) = HMAC(KDFa(seed,"INTEGRITY"), enc || name) || enc,
//!                enc = CFB_{KDFa(seed,"STORAGE",name)}(x), IV 0
//! ```
//!
//! The device's TPM runs `ActivateCredential(SRK, EK)` (which only the EK's TPM can do, and
//! only for the SRK named in the credential) to get the inner key, then `Import`s the duplicate
//! under its SRK. [`kdf`] is KDFa, [`protect`] the seed encryption and the outer wrapper both
//! constructions share, [`blob`] puts them together. [`session`] keeps, per registration, the
//! keys of its last challenge (`tpm_sessions` in `dps.db`), and `challenge` runs the TPM steps
//! of the registration flow for the HTTPS and AMQP front-ends.
//!
//! Identity keys are secrets: [`IdentityKey`]'s `Debug` is redacted, and no error carries one.

mod blob;
mod challenge;
mod kdf;
mod protect;
pub(crate) mod session;
#[cfg(test)]
mod tests;

use std::fmt;

use azure_iot_protocol::tpm::TpmError;
use ring::rand::{SecureRandom, SystemRandom};

pub(crate) use blob::activation_blob;
pub(crate) use challenge::hub_key_blob;

/// Which of the device's keys a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRole {
    /// The endorsement key.
    Endorsement,
    /// The storage root key.
    StorageRoot,
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Endorsement => "endorsement key",
            Self::StorageRoot => "storage root key",
        })
    }
}

/// Why an activation blob could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TpmAttestationError {
    /// A key's public area does not parse.
    #[error("the {role} is not a TPM2B_PUBLIC: {source}")]
    Malformed {
        /// Which key.
        role: KeyRole,
        /// What is wrong with it.
        source: TpmError,
    },
    /// A key parses but cannot protect secrets the way DPS needs (not RSA, no AES-CFB
    /// symmetric definition, an unsupported name algorithm, a modulus of the wrong size...).
    #[error("the {role} cannot be used for TPM attestation: {reason}")]
    Unsuitable {
        /// Which key.
        role: KeyRole,
        /// What it lacks.
        reason: String,
    },
    /// A structure we build does not marshal (cannot happen with the sizes used here).
    #[error("TPM structure: {0}")]
    Marshal(#[from] TpmError),
    /// The operating system's random generator failed.
    #[error("the random generator failed")]
    Random,
}

/// A 32-byte HMAC-SHA256 identity key DPS gives a device's TPM. Never shown in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct IdentityKey(Vec<u8>);

impl IdentityKey {
    /// The key size: SHA-256's digest size.
    pub(crate) const LEN: usize = 32;

    /// A fresh random key.
    pub(crate) fn generate() -> Result<Self, TpmAttestationError> {
        random(Self::LEN).map(Self)
    }

    /// A key stored earlier.
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The key bytes (to store or to verify a signature with).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityKey(<redacted>)")
    }
}

/// `len` bytes from the operating system's generator.
fn random(len: usize) -> Result<Vec<u8>, TpmAttestationError> {
    let mut bytes = vec![0; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TpmAttestationError::Random)?;
    Ok(bytes)
}
