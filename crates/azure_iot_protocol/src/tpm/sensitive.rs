//! `TPMT_SENSITIVE`: the secret half of an object, as a duplication blob carries it.

use std::fmt;

use super::marshal::{Reader, Writer};
use super::{AlgId, TpmError};

/// `TPMT_SENSITIVE` (Part 2 §12.3.2.4): the plaintext inside a duplication blob. Every member
/// after the type is a `TPM2B`, whatever the type. `Debug` shows only the type and sizes.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive {
    /// `sensitiveType`: the object type, for example [`AlgId::KEYEDHASH`].
    pub sensitive_type: AlgId,
    /// `authValue`: the object's password (empty for DPS's identity keys).
    pub auth_value: Vec<u8>,
    /// `seedValue`: for a keyed-hash object, the obfuscation value hashed into `unique`.
    pub seed_value: Vec<u8>,
    /// `sensitive`: the key itself (for a keyed-hash object, the HMAC key).
    pub sensitive: Vec<u8>,
}

impl Sensitive {
    /// Parses a whole `TPMT_SENSITIVE`.
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmError> {
        let mut r = Reader::new(bytes);
        let sensitive = Self {
            sensitive_type: AlgId(r.u16("TPMT_SENSITIVE sensitiveType")?),
            auth_value: r.sized("TPMT_SENSITIVE authValue")?.to_vec(),
            seed_value: r.sized("TPMT_SENSITIVE seedValue")?.to_vec(),
            sensitive: r.sized("TPMT_SENSITIVE sensitive")?.to_vec(),
        };
        r.finish("TPMT_SENSITIVE")?;
        Ok(sensitive)
    }

    /// Marshals as `TPMT_SENSITIVE`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TpmError> {
        let mut w = Writer::default();
        w.u16(self.sensitive_type.0);
        w.sized("TPMT_SENSITIVE authValue", &self.auth_value)?;
        w.sized("TPMT_SENSITIVE seedValue", &self.seed_value)?;
        w.sized("TPMT_SENSITIVE sensitive", &self.sensitive)?;
        Ok(w.buf)
    }

    /// Marshals as `TPM2B_SENSITIVE` (size first), the form a duplication blob encrypts.
    pub fn to_tpm2b(&self) -> Result<Vec<u8>, TpmError> {
        let mut w = Writer::default();
        w.sized("TPM2B_SENSITIVE", &self.to_bytes()?)?;
        Ok(w.buf)
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sensitive")
            .field("sensitive_type", &self.sensitive_type)
            .field(
                "auth_value",
                &format_args!("<{} bytes>", self.auth_value.len()),
            )
            .field(
                "seed_value",
                &format_args!("<{} bytes>", self.seed_value.len()),
            )
            .field(
                "sensitive",
                &format_args!("<{} bytes>", self.sensitive.len()),
            )
            .finish()
    }
}
