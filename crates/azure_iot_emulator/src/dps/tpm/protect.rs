//! Protection of secrets to a TPM storage key (the EK or the SRK): the seed, RSA-OAEP
//! encrypted to the key (Part 1 §11.4.3 and Annex B.10.3), and the outer wrapper keyed from
//! that seed (Part 1 §23.3.2.2 and §24.4): AES-CFB with a zero IV under
//! `KDFa(seed, "STORAGE", name)` and an HMAC under `KDFa(seed, "INTEGRITY")`.

use aes::{Aes128, Aes192, Aes256};
use azure_iot_protocol::tpm::{AlgId, ObjectAttributes, Public, PublicKind, Wrapped};
use cfb_mode::Encryptor;
use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
use ring::hmac;
use rsa::{BigUint, Oaep, RsaPublicKey};

use super::kdf::kdfa;
use super::{KeyRole, TpmAttestationError, random};

/// An RSA restricted decryption key of the device's TPM, ready to protect secrets to.
pub(super) struct Protector {
    role: KeyRole,
    public: Public,
    rsa: RsaPublicKey,
    hmac: hmac::Algorithm,
    digest_len: usize,
    symmetric_key_len: usize,
}

impl Protector {
    /// Parses and checks a `TPM2B_PUBLIC` the device sent.
    pub(super) fn from_tpm2b(role: KeyRole, tpm2b: &[u8]) -> Result<Self, TpmAttestationError> {
        let unsuitable = |reason: String| TpmAttestationError::Unsuitable { role, reason };
        let public = Public::from_tpm2b(tpm2b)
            .map_err(|source| TpmAttestationError::Malformed { role, source })?;
        let PublicKind::Rsa(rsa) = &public.kind else {
            return Err(unsuitable("it is not an RSA key".into()));
        };
        if !public
            .object_attributes
            .contains(ObjectAttributes::RESTRICTED | ObjectAttributes::DECRYPT)
        {
            return Err(unsuitable("it is not a restricted decryption key".into()));
        }
        let (hmac, digest_len) = match public.name_alg {
            AlgId::SHA256 => (hmac::HMAC_SHA256, 32),
            AlgId::SHA384 => (hmac::HMAC_SHA384, 48),
            AlgId::SHA512 => (hmac::HMAC_SHA512, 64),
            other => {
                return Err(unsuitable(format!(
                    "name algorithm {other} is not supported"
                )));
            }
        };
        let symmetric_key_len = match rsa.symmetric {
            Some(sym)
                if sym.algorithm == AlgId::AES
                    && sym.mode == AlgId::CFB
                    && matches!(sym.key_bits, 128 | 192 | 256) =>
            {
                usize::from(sym.key_bits / 8)
            }
            other => {
                return Err(unsuitable(format!(
                    "its symmetric definition {other:?} is not AES-CFB"
                )));
            }
        };
        if !matches!(rsa.key_bits, 2048 | 3072 | 4096)
            || rsa.modulus.len() != usize::from(rsa.key_bits / 8)
        {
            return Err(unsuitable(format!(
                "a {}-byte modulus for {} bits is not a supported RSA key",
                rsa.modulus.len(),
                rsa.key_bits
            )));
        }
        let key = RsaPublicKey::new(
            BigUint::from_bytes_be(&rsa.modulus),
            BigUint::from(rsa.effective_exponent()),
        )
        .map_err(|e| unsuitable(format!("its RSA public key is invalid: {e}")))?;
        Ok(Self {
            role,
            rsa: key,
            hmac,
            digest_len,
            symmetric_key_len,
            public,
        })
    }

    /// The key's public area.
    pub(super) fn public(&self) -> &Public {
        &self.public
    }

    /// A fresh seed and its encryption to this key under `label` (given with its terminating
    /// zero, as the TPM uses it): the seed is as long as the key's name digest.
    pub(super) fn new_seed(&self, label: &str) -> Result<(Vec<u8>, Vec<u8>), TpmAttestationError> {
        let seed = random(self.digest_len)?;
        let padding = match self.public.name_alg {
            AlgId::SHA384 => Oaep::new_with_label::<sha2::Sha384, _>(label),
            AlgId::SHA512 => Oaep::new_with_label::<sha2::Sha512, _>(label),
            _ => Oaep::new_with_label::<sha2::Sha256, _>(label),
        };
        let encrypted = self
            .rsa
            .encrypt(&mut rand_core::OsRng, padding, &seed)
            .map_err(|e| TpmAttestationError::Unsuitable {
                role: self.role,
                reason: format!("RSA-OAEP encryption failed: {e}"),
            })?;
        Ok((seed, encrypted))
    }

    /// The outer wrapper of `plaintext` for the object called `name`, keyed from `seed`.
    pub(super) fn outer_wrap(
        &self,
        seed: &[u8],
        name: &[u8],
        plaintext: &[u8],
    ) -> Result<Wrapped, TpmAttestationError> {
        let sym_key = kdfa(
            self.hmac,
            seed,
            b"STORAGE",
            name,
            &[],
            self.symmetric_key_len,
        );
        let mut encrypted = plaintext.to_vec();
        cfb_encrypt(&sym_key, &mut encrypted)?;
        let hmac_key = kdfa(self.hmac, seed, b"INTEGRITY", &[], &[], self.digest_len);
        let mut ctx = hmac::Context::with_key(&hmac::Key::new(self.hmac, &hmac_key));
        ctx.update(&encrypted);
        ctx.update(name);
        Ok(Wrapped {
            integrity: ctx.sign().as_ref().to_vec(),
            encrypted,
        })
    }
}

/// AES-CFB (full-block feedback) with a zero IV, in place; the key length picks AES-128/192/256.
pub(super) fn cfb_encrypt(key: &[u8], data: &mut [u8]) -> Result<(), TpmAttestationError> {
    let iv = [0u8; 16];
    let bad_key = |_| TpmAttestationError::Unsuitable {
        role: KeyRole::StorageRoot,
        reason: format!("no AES key of {} bytes", key.len()),
    };
    match key.len() {
        16 => Encryptor::<Aes128>::new_from_slices(key, &iv)
            .map_err(bad_key)?
            .encrypt(data),
        24 => Encryptor::<Aes192>::new_from_slices(key, &iv)
            .map_err(bad_key)?
            .encrypt(data),
        _ => Encryptor::<Aes256>::new_from_slices(key, &iv)
            .map_err(bad_key)?
            .encrypt(data),
    }
    Ok(())
}
