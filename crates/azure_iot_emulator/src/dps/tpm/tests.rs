//! The activation blob opened by a real (software) TPM: swtpm and tpm2-tools.

use azure_iot_core::sas::SharedAccessKey;
use azure_iot_protocol::tpm::{ActivationBlob, Public};
use azure_iot_test::SoftwareTpm;

use super::kdf::kdfa;
use super::{IdentityKey, KeyRole, TpmAttestationError, activation_blob};

fn ring_hmac(key: &IdentityKey, message: &[u8]) -> Vec<u8> {
    SharedAccessKey::from_bytes(key.as_bytes().to_vec())
        .map(|k| k.sign(message))
        .unwrap_or_default()
}

fn blob_for(tpm: &SoftwareTpm, ek: &[u8], srk: &[u8], key: &IdentityKey) -> ActivationBlob {
    let blob = match activation_blob(ek, srk, key) {
        Ok(blob) => blob,
        Err(e) => panic!("{e}"),
    };
    // The wire form parses back to the same six structures.
    let bytes = blob.to_bytes().unwrap_or_default();
    assert_eq!(ActivationBlob::parse(&bytes), Ok(blob.clone()));
    let _ = tpm;
    blob
}

#[test]
fn swtpm_activates_imports_and_signs_with_the_identity_key() {
    let tpm = SoftwareTpm::start();
    let (ek, srk) = tpm.create_ek_and_srk();
    let key = IdentityKey::generate().unwrap_or_else(|e| panic!("{e}"));
    let blob = blob_for(&tpm, &ek, &srk, &key);
    tpm.open_activation_blob(&blob)
        .unwrap_or_else(|e| panic!("{e}"));
    let message = b"scope/registrations/device-1\n1700000000";
    let in_tpm = tpm.hmac(message);
    assert_eq!(in_tpm, ring_hmac(&key, message));
    assert_ne!(
        in_tpm,
        ring_hmac(&IdentityKey::from_bytes(vec![7; 32]), message)
    );
}

#[test]
fn swtpm_refuses_a_blob_made_for_another_srk_or_ek() {
    let tpm = SoftwareTpm::start();
    let (ek, srk) = tpm.create_ek_and_srk();
    let other = SoftwareTpm::start();
    let (other_ek, other_srk) = other.create_ek_and_srk();
    let key = IdentityKey::generate().unwrap_or_else(|e| panic!("{e}"));

    // Bound to another TPM's SRK: ActivateCredential fails the credential's integrity (Name).
    let wrong_srk = blob_for(&tpm, &ek, &other_srk, &key);
    let err = tpm.open_activation_blob(&wrong_srk).err();
    assert!(err.is_some(), "a blob for another SRK must not open");

    // Encrypted to another TPM's EK: ActivateCredential cannot decrypt the seed.
    let wrong_ek = blob_for(&tpm, &other_ek, &srk, &key);
    assert!(
        tpm.open_activation_blob(&wrong_ek).is_err(),
        "a blob for another EK must not open"
    );

    // The right pair still works on the same TPM.
    let right = blob_for(&tpm, &ek, &srk, &key);
    tpm.open_activation_blob(&right)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn unusable_keys_are_typed_errors() {
    let key = IdentityKey::from_bytes(vec![1; 32]);
    let err = activation_blob(&[0, 1, 2], &[], &key).err();
    assert!(matches!(
        err,
        Some(TpmAttestationError::Malformed {
            role: KeyRole::Endorsement,
            ..
        })
    ));
    // A keyed-hash public area is not an RSA storage key.
    let hmac_public = Public {
        name_alg: azure_iot_protocol::tpm::AlgId::SHA256,
        object_attributes: azure_iot_protocol::tpm::ObjectAttributes(0),
        auth_policy: vec![],
        kind: azure_iot_protocol::tpm::PublicKind::KeyedHash(
            azure_iot_protocol::tpm::KeyedHashPublic {
                scheme: azure_iot_protocol::tpm::KeyedHashScheme::Null,
                unique: vec![],
            },
        ),
    };
    let tpm2b = hmac_public.to_tpm2b().unwrap_or_default();
    let err = activation_blob(&tpm2b, &tpm2b, &key).err();
    assert!(matches!(
        err,
        Some(TpmAttestationError::Unsuitable {
            role: KeyRole::Endorsement,
            ..
        })
    ));
    assert!(!format!("{key:?}").contains('1'));
}

#[test]
fn kdfa_counts_blocks_and_truncates() {
    let a = kdfa(ring::hmac::HMAC_SHA256, b"k", b"STORAGE", b"u", b"", 48);
    let b = kdfa(ring::hmac::HMAC_SHA256, b"k", b"STORAGE", b"u", b"", 16);
    assert_eq!(a.len(), 48);
    // The requested size is part of every block's input.
    assert_ne!(&a[..16], &b[..]);
    let c = kdfa(ring::hmac::HMAC_SHA256, b"k", b"INTEGRITY", b"u", b"", 16);
    assert_ne!(b, c);
}
