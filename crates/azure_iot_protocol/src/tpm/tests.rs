use proptest::prelude::*;

use super::activation::base32_for_tests;
use super::*;

fn hash_alg() -> impl Strategy<Value = AlgId> {
    prop_oneof![
        Just(AlgId::SHA1),
        Just(AlgId::SHA256),
        Just(AlgId::SHA384),
        Just(AlgId::SHA512),
        any::<u16>().prop_map(AlgId),
    ]
}

fn rsa_scheme() -> impl Strategy<Value = RsaScheme> {
    prop_oneof![
        Just(RsaScheme::Null),
        Just(RsaScheme::Rsaes),
        hash_alg().prop_map(RsaScheme::Rsassa),
        hash_alg().prop_map(RsaScheme::Rsapss),
        hash_alg().prop_map(RsaScheme::Oaep),
    ]
}

fn keyed_hash_scheme() -> impl Strategy<Value = KeyedHashScheme> {
    prop_oneof![
        Just(KeyedHashScheme::Null),
        hash_alg().prop_map(KeyedHashScheme::Hmac),
        (hash_alg(), hash_alg()).prop_map(|(hash, kdf)| KeyedHashScheme::Xor { hash, kdf }),
    ]
}

fn sym_def() -> impl Strategy<Value = Option<SymDefObject>> {
    proptest::option::of(
        (
            any::<u16>().prop_filter("not NULL", |a| *a != AlgId::NULL.0),
            any::<u16>(),
            any::<u16>(),
        )
            .prop_map(|(algorithm, key_bits, mode)| SymDefObject {
                algorithm: AlgId(algorithm),
                key_bits,
                mode: AlgId(mode),
            }),
    )
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn public() -> impl Strategy<Value = Public> {
    let rsa = (
        sym_def(),
        rsa_scheme(),
        any::<u16>(),
        any::<u32>(),
        bytes(300),
    )
        .prop_map(|(symmetric, scheme, key_bits, exponent, modulus)| {
            PublicKind::Rsa(RsaPublic {
                symmetric,
                scheme,
                key_bits,
                exponent,
                modulus,
            })
        });
    let keyed = (keyed_hash_scheme(), bytes(70))
        .prop_map(|(scheme, unique)| PublicKind::KeyedHash(KeyedHashPublic { scheme, unique }));
    (hash_alg(), any::<u32>(), bytes(70), prop_oneof![rsa, keyed]).prop_map(
        |(name_alg, attributes, auth_policy, kind)| Public {
            name_alg,
            object_attributes: ObjectAttributes(attributes),
            auth_policy,
            kind,
        },
    )
}

fn blob() -> impl Strategy<Value = ActivationBlob> {
    (
        bytes(100),
        bytes(300),
        bytes(200),
        bytes(300),
        bytes(100),
        bytes(40),
    )
        .prop_map(
            |(
                credential_blob,
                encrypted_secret,
                duplicate,
                encrypted_seed,
                identity_public,
                enc_uri_data,
            )| {
                ActivationBlob {
                    credential_blob,
                    encrypted_secret,
                    duplicate,
                    encrypted_seed,
                    identity_public,
                    enc_uri_data,
                }
            },
        )
}

proptest! {
    #[test]
    fn public_round_trips(public in public()) {
        let tpmt = public.to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(Public::parse(&tpmt), Ok(public.clone()));
        let tpm2b = public.to_tpm2b().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&tpm2b[2..], &tpmt[..]);
        prop_assert_eq!(Public::from_tpm2b(&tpm2b), Ok(public));
    }

    #[test]
    fn public_parse_is_total_and_exact(input in bytes(400)) {
        if let Ok(public) = Public::parse(&input) {
            prop_assert_eq!(public.to_bytes(), Ok(input.clone()));
        }
        if let Ok(public) = Public::from_tpm2b(&input) {
            prop_assert_eq!(public.to_tpm2b(), Ok(input));
        }
    }

    #[test]
    fn public_truncated_is_an_error(public in public(), cut in any::<prop::sample::Index>()) {
        let tpmt = public.to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let cut = cut.index(tpmt.len());
        prop_assert!(Public::parse(&tpmt[..cut]).is_err());
    }

    #[test]
    fn blob_round_trips(blob in blob()) {
        let bytes = blob.to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(ActivationBlob::parse(&bytes), Ok(blob));
        let mut longer = bytes.clone();
        longer.push(0);
        let is_trailing = matches!(ActivationBlob::parse(&longer), Err(TpmError::TrailingBytes { .. }));
        prop_assert!(is_trailing);
    }

    #[test]
    fn blob_parse_is_total_and_exact(input in bytes(600)) {
        if let Ok(blob) = ActivationBlob::parse(&input) {
            prop_assert_eq!(blob.to_bytes(), Ok(input));
        }
    }

    #[test]
    fn wrapped_round_trips(integrity in bytes(70), encrypted in bytes(200)) {
        let wrapped = Wrapped { integrity, encrypted };
        let bytes = wrapped.to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(Wrapped::parse(&bytes), Ok(wrapped));
    }

    #[test]
    fn wrapped_parse_is_total_and_exact(input in bytes(200)) {
        if let Ok(wrapped) = Wrapped::parse(&input) {
            prop_assert_eq!(wrapped.to_bytes(), Ok(input));
        }
    }

    #[test]
    fn sensitive_round_trips(t in any::<u16>(), a in bytes(40), s in bytes(70), k in bytes(130)) {
        let sensitive = Sensitive { sensitive_type: AlgId(t), auth_value: a, seed_value: s, sensitive: k };
        let bytes = sensitive.to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(Sensitive::parse(&bytes), Ok(sensitive.clone()));
        let tpm2b = sensitive.to_tpm2b().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&tpm2b[2..], &bytes[..]);
    }

    #[test]
    fn sensitive_parse_is_total_and_exact(input in bytes(200)) {
        if let Ok(sensitive) = Sensitive::parse(&input) {
            prop_assert_eq!(sensitive.to_bytes(), Ok(input));
        }
    }

    #[test]
    fn default_registration_id_is_lowercase_base32(ek in bytes(400)) {
        let id = default_registration_id(&ek);
        // 32 digest bytes → 52 base32 characters without padding.
        prop_assert_eq!(id.len(), 52);
        prop_assert!(id.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
    }
}

#[test]
fn base32_matches_rfc4648_vectors() {
    for (input, expected) in [
        ("", ""),
        ("f", "my"),
        ("fo", "mzxq"),
        ("foo", "mzxw6"),
        ("foob", "mzxw6yq"),
        ("fooba", "mzxw6ytb"),
        ("foobar", "mzxw6ytboi"),
    ] {
        assert_eq!(base32_for_tests(input.as_bytes()), expected, "{input}");
    }
}

/// An EK made by swtpm with `tpm2_createek -G rsa -u ek.pub` (TPM2B_PUBLIC of the TCG EK
/// Credential Profile's default RSA 2048 template).
const SWTPM_EK_TPM2B: &str = "013a0001000b000300b20020837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa00060080004300100800000000000100ae14f28c2d118d3d602fe6e3ffebbe6163f9e5cc17d02962ff99f828f6aa2bc6222704472e8e074563841c8a1a523a5e7b8fcd1ec025be5aa436bf300d52be9b10379554c3ae02328f29dcab19ab95952425796394fa201567414fe95e8aa6a61f66f24b44b6214e8701f22c3b32b8a04efe9754bbe9fe2684535cedc06139becbbf600462f04f9d10f01d4d205350c7bc2c7f3880ec6f277d70bf26e0f4fa0b9eee9e78636bc6d1299f0773c82e010d6a1b613beae36fcf3cfac72389d75950d36a678d9228d4b09b1038f7fa817a9936d5b15608b64ba2cf739430e045b5b091226cf1ddcbb13592124fc6a86d830acee5103df94f070d3307369b291a7ded";
/// Its Name as `tpm2_readpublic` prints it.
const SWTPM_EK_NAME: &str = "000b03566c19ba6b09c5ffa90000c9c686c2dd4bf3352ea063f543497943fd511dcb";

#[test]
fn parses_a_standard_ek_template() {
    let Ok(bytes) = hex_decode(SWTPM_EK_TPM2B) else {
        panic!("bad hex fixture");
    };
    let public = match Public::from_tpm2b(&bytes) {
        Ok(public) => public,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(public.name_alg, AlgId::SHA256);
    let Some(rsa) = public.rsa() else {
        panic!("not RSA");
    };
    assert_eq!(rsa.key_bits, 2048);
    assert_eq!(rsa.modulus.len(), 256);
    assert_eq!(
        rsa.symmetric,
        Some(SymDefObject {
            algorithm: AlgId::AES,
            key_bits: 128,
            mode: AlgId::CFB
        })
    );
    assert_eq!(rsa.scheme, RsaScheme::Null);
    assert_eq!(rsa.effective_exponent(), 65537);
    assert!(public.object_attributes.contains(
        ObjectAttributes::FIXED_TPM | ObjectAttributes::RESTRICTED | ObjectAttributes::DECRYPT
    ));
    assert_eq!(public.to_tpm2b(), Ok(bytes));
    assert_eq!(
        public.name(),
        hex_decode(SWTPM_EK_NAME).map_err(|_| TpmError::TooLong {
            what: "hex",
            len: 0
        })
    );
}

#[test]
fn ecc_keys_are_a_typed_error() {
    // type ECC, nameAlg SHA256, attributes, empty policy, then anything.
    let ecc = [0x00, 0x23, 0x00, 0x0b, 0, 0, 0, 0, 0, 0, 0x00, 0x10];
    assert_eq!(
        Public::parse(&ecc),
        Err(TpmError::UnsupportedType(AlgId::ECC))
    );
    assert!(
        TpmError::UnsupportedType(AlgId::ECC)
            .to_string()
            .contains("ECC")
    );
}

#[test]
fn sensitive_debug_hides_the_key() {
    let sensitive = Sensitive {
        sensitive_type: AlgId::KEYEDHASH,
        auth_value: vec![],
        seed_value: vec![0xAB; 32],
        sensitive: vec![0xCD; 32],
    };
    let debug = format!("{sensitive:?}");
    assert!(!debug.contains("171") && !debug.contains("205") && !debug.contains("ab"));
    assert!(debug.contains("<32 bytes>"));
}

fn hex_decode(hex: &str) -> Result<Vec<u8>, std::num::ParseIntError> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect()
}
