//! The public-area templates (`TPMT_PUBLIC`) of the two primary keys DPS attestation uses, and
//! the algorithm constants they name.

use crate::marshal::Writer;

/// `TPM_ALG_RSA`.
pub(crate) const ALG_RSA: u16 = 0x0001;
/// `TPM_ALG_SHA256`.
pub const ALG_SHA256: u16 = 0x000B;
/// `TPM_ALG_AES`.
pub(crate) const ALG_AES: u16 = 0x0006;
/// `TPM_ALG_CFB`.
pub(crate) const ALG_CFB: u16 = 0x0043;
/// `TPM_ALG_NULL`.
pub(crate) const ALG_NULL: u16 = 0x0010;

/// `TPMA_OBJECT` bits.
mod attr {
    pub(super) const FIXED_TPM: u32 = 1 << 1;
    pub(super) const FIXED_PARENT: u32 = 1 << 4;
    pub(super) const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub(super) const USER_WITH_AUTH: u32 = 1 << 6;
    pub(super) const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub(super) const NO_DA: u32 = 1 << 10;
    pub(super) const RESTRICTED: u32 = 1 << 16;
    pub(super) const DECRYPT: u32 = 1 << 17;
}

/// The EK's authorisation policy: `TPM2_PolicySecret(TPM_RH_ENDORSEMENT)` with SHA-256, as the
/// TCG EK Credential Profile fixes it.
pub const EK_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];

/// An RSA-2048 restricted decryption key with an AES-128-CFB symmetric part, the shape of
/// both the EK and the SRK.
fn rsa_storage_key(attributes: u32, policy: &[u8], unique_len: usize) -> Vec<u8> {
    let mut w = Writer::new();
    w.u16(ALG_RSA).u16(ALG_SHA256).u32(attributes);
    // Both lengths are constants far below the 16-bit limit.
    w.u16(policy.len() as u16).bytes(policy);
    w.u16(ALG_AES).u16(128).u16(ALG_CFB); // symmetric
    w.u16(ALG_NULL); // scheme
    w.u16(2048).u32(0); // keyBits, exponent (default 65537)
    w.u16(unique_len as u16).bytes(&vec![0; unique_len]);
    w.into_bytes()
}

/// The TCG default EK template (EK Credential Profile, RSA 2048, template "L-1"): fixed to the
/// TPM, restricted decryption, usable only through [`EK_POLICY`], a 256-byte zero `unique`.
pub fn ek_template() -> Vec<u8> {
    rsa_storage_key(
        attr::FIXED_TPM
            | attr::FIXED_PARENT
            | attr::SENSITIVE_DATA_ORIGIN
            | attr::ADMIN_WITH_POLICY
            | attr::RESTRICTED
            | attr::DECRYPT,
        &EK_POLICY,
        256,
    )
}

/// The storage root key template (as the Azure SDKs create it): RSA 2048, restricted
/// decryption, empty authValue usable with a password session, no dictionary-attack lockout.
pub fn srk_template() -> Vec<u8> {
    rsa_storage_key(
        attr::FIXED_TPM
            | attr::FIXED_PARENT
            | attr::SENSITIVE_DATA_ORIGIN
            | attr::USER_WITH_AUTH
            | attr::NO_DA
            | attr::RESTRICTED
            | attr::DECRYPT,
        &[],
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ek_template_has_the_profile_attributes_and_policy() {
        let t = ek_template();
        assert_eq!(&t[0..4], &[0x00, 0x01, 0x00, 0x0B]);
        assert_eq!(&t[4..8], &0x0003_00B2u32.to_be_bytes());
        assert_eq!(&t[8..10], &[0, 32]);
        assert_eq!(&t[10..42], &EK_POLICY);
        assert_eq!(t.len(), 42 + 6 + 2 + 2 + 4 + 2 + 256);
        let s = srk_template();
        assert_eq!(&s[4..8], &0x0003_0472u32.to_be_bytes());
    }
}
