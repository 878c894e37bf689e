//! The activation blob: the identity key duplicated to the SRK, and its inner wrap key as a
//! credential for the EK bound to the SRK's Name.

use azure_iot_protocol::tpm::{
    ActivationBlob, AlgId, KeyedHashPublic, KeyedHashScheme, ObjectAttributes, Public, PublicKind,
    Sensitive, marshal_tpm2b,
};

use super::protect::{Protector, cfb_encrypt};
use super::{IdentityKey, KeyRole, TpmAttestationError, random};

/// OAEP label of a credential's seed (`TPM2_MakeCredential`).
const IDENTITY_LABEL: &str = "IDENTITY\0";
/// OAEP label of a duplication seed (`TPM2_Duplicate`).
const DUPLICATE_LABEL: &str = "DUPLICATE\0";
/// Size of the AES-128 inner wrap key the credential carries.
const INNER_KEY_LEN: usize = 16;

/// The activation blob that gives `key` to the TPM whose endorsement key is `ek` and whose
/// storage root key is `srk` (both `TPM2B_PUBLIC` as the device sent them).
pub(crate) fn activation_blob(
    ek: &[u8],
    srk: &[u8],
    key: &IdentityKey,
) -> Result<ActivationBlob, TpmAttestationError> {
    let ek = Protector::from_tpm2b(KeyRole::Endorsement, ek)?;
    let srk = Protector::from_tpm2b(KeyRole::StorageRoot, srk)?;

    // The identity key as a keyed-hash object that may be imported (fixedTPM and fixedParent
    // clear) and only computes HMACs.
    let seed_value = random(32)?;
    let mut unique_input = seed_value.clone();
    unique_input.extend_from_slice(key.as_bytes());
    let identity = Public {
        name_alg: AlgId::SHA256,
        object_attributes: ObjectAttributes(
            ObjectAttributes::USER_WITH_AUTH | ObjectAttributes::SIGN_ENCRYPT,
        ),
        auth_policy: Vec::new(),
        kind: PublicKind::KeyedHash(KeyedHashPublic {
            scheme: KeyedHashScheme::Hmac(AlgId::SHA256),
            unique: sha256(&unique_input),
        }),
    };
    let identity_name = identity.name()?;
    let sensitive = Sensitive {
        sensitive_type: AlgId::KEYEDHASH,
        auth_value: Vec::new(),
        seed_value,
        sensitive: key.as_bytes().to_vec(),
    }
    .to_tpm2b()?;

    // Inner wrapper: integrity = H(TPM2B_SENSITIVE || Name), then AES-CFB under the inner key.
    let mut integrity_input = sensitive.clone();
    integrity_input.extend_from_slice(&identity_name);
    let mut inner = marshal_tpm2b(&sha256(&integrity_input))?;
    inner.extend_from_slice(&sensitive);
    let inner_key = random(INNER_KEY_LEN)?;
    cfb_encrypt(&inner_key, &mut inner)?;

    // Outer wrapper to the SRK.
    let (dup_seed, encrypted_seed) = srk.new_seed(DUPLICATE_LABEL)?;
    let duplicate = srk.outer_wrap(&dup_seed, &identity_name, &inner)?;

    // The inner key as a credential to the EK, bound to the SRK's Name.
    let (cred_seed, encrypted_secret) = ek.new_seed(IDENTITY_LABEL)?;
    let credential = ek.outer_wrap(
        &cred_seed,
        &srk.public().name()?,
        &marshal_tpm2b(&inner_key)?,
    )?;

    Ok(ActivationBlob {
        credential_blob: credential.to_bytes()?,
        encrypted_secret,
        duplicate: duplicate.to_bytes()?,
        encrypted_seed,
        identity_public: identity.to_bytes()?,
        enc_uri_data: Vec::new(),
    })
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}
