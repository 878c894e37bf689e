//! DPS's activation blob (`authenticationKey`) and the protected structures inside it.

use super::TpmError;
use super::marshal::{Reader, Writer};

/// The contents of a `TPM2B_ID_OBJECT` (a credential blob) or a `TPM2B_PRIVATE` (a
/// duplication blob) with an outer wrapper: a `TPM2B_DIGEST` integrity HMAC followed by the
/// encrypted bytes, which run to the end (Part 1 §24 and §23.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped {
    /// The outer HMAC over the encrypted bytes and the object's Name.
    pub integrity: Vec<u8>,
    /// The encrypted bytes (a marshalled `TPM2B_DIGEST` credential or `TPM2B_SENSITIVE`).
    pub encrypted: Vec<u8>,
}

impl Wrapped {
    /// Parses the contents of a `TPM2B_ID_OBJECT` or `TPM2B_PRIVATE` (without their size).
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmError> {
        let mut r = Reader::new(bytes);
        let integrity = r.sized("integrity HMAC")?.to_vec();
        Ok(Self {
            integrity,
            encrypted: r.rest().to_vec(),
        })
    }

    /// Marshals the contents (without the outer size).
    pub fn to_bytes(&self) -> Result<Vec<u8>, TpmError> {
        let mut w = Writer::default();
        w.sized("integrity HMAC", &self.integrity)?;
        w.raw(&self.encrypted);
        Ok(w.buf)
    }
}

/// DPS's activation blob: the `authenticationKey` of the HTTPS 401 challenge, of the AMQP
/// SASL `TPM` challenges and of a TPM registration's result. Six size-prefixed TPM
/// structures, concatenated in this order; each field holds the structure's contents without
/// its `UINT16` size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationBlob {
    /// `TPM2B_ID_OBJECT`: the credential blob for `TPM2_ActivateCredential` (see [`Wrapped`]).
    pub credential_blob: Vec<u8>,
    /// `TPM2B_ENCRYPTED_SECRET`: the credential seed, RSA-OAEP encrypted to the EK.
    pub encrypted_secret: Vec<u8>,
    /// `TPM2B_PRIVATE`: the duplicated identity key (see [`Wrapped`]).
    pub duplicate: Vec<u8>,
    /// `TPM2B_ENCRYPTED_SECRET`: the duplication seed, RSA-OAEP encrypted to the SRK.
    pub encrypted_seed: Vec<u8>,
    /// `TPM2B_PUBLIC`: the identity key's `TPMT_PUBLIC`.
    pub identity_public: Vec<u8>,
    /// `TPM2B_DATA`: encrypted URI data (clients read and ignore it; may be empty).
    pub enc_uri_data: Vec<u8>,
}

impl ActivationBlob {
    /// Parses a whole activation blob (the base64-decoded `authenticationKey`).
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmError> {
        let mut r = Reader::new(bytes);
        let blob = Self {
            credential_blob: r.sized("TPM2B_ID_OBJECT credentialBlob")?.to_vec(),
            encrypted_secret: r.sized("TPM2B_ENCRYPTED_SECRET secret")?.to_vec(),
            duplicate: r.sized("TPM2B_PRIVATE duplicate")?.to_vec(),
            encrypted_seed: r.sized("TPM2B_ENCRYPTED_SECRET inSymSeed")?.to_vec(),
            identity_public: r.sized("TPM2B_PUBLIC identity key")?.to_vec(),
            enc_uri_data: r.sized("TPM2B_DATA encUriData")?.to_vec(),
        };
        r.finish("activation blob")?;
        Ok(blob)
    }

    /// Marshals the six structures.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TpmError> {
        let mut w = Writer::default();
        w.sized("TPM2B_ID_OBJECT credentialBlob", &self.credential_blob)?;
        w.sized("TPM2B_ENCRYPTED_SECRET secret", &self.encrypted_secret)?;
        w.sized("TPM2B_PRIVATE duplicate", &self.duplicate)?;
        w.sized("TPM2B_ENCRYPTED_SECRET inSymSeed", &self.encrypted_seed)?;
        w.sized("TPM2B_PUBLIC identity key", &self.identity_public)?;
        w.sized("TPM2B_DATA encUriData", &self.enc_uri_data)?;
        Ok(w.buf)
    }
}

/// `bytes` as a `TPM2B` (a `UINT16` size, then the bytes), for example a `TPM2B_DIGEST`.
pub fn marshal_tpm2b(bytes: &[u8]) -> Result<Vec<u8>, TpmError> {
    let mut w = Writer::default();
    w.sized("TPM2B", bytes)?;
    Ok(w.buf)
}

/// The registration id a TPM device without a configured one uses (the Node SDK's rule):
/// lowercase RFC 4648 base32 of SHA-256 of the EK as sent to DPS (its `TPM2B_PUBLIC` bytes),
/// without `=` padding.
pub fn default_registration_id(endorsement_key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, endorsement_key);
    base32_lower(digest.as_ref())
}

/// RFC 4648 base32 in lowercase without padding.
fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &byte in bytes {
        buffer = ((buffer << 8) | u32::from(byte)) & 0xFFFF;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
pub(super) fn base32_for_tests(bytes: &[u8]) -> String {
    base32_lower(bytes)
}
