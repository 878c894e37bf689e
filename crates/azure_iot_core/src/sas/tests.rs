use super::*;
use proptest::prelude::*;

const ZERO_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn zero_key() -> SharedAccessKey {
    SharedAccessKey::from_base64(ZERO_KEY).unwrap()
}

struct Vector {
    sdk: String,
    scenario: String,
    resource: String,
    key_name: Option<String>,
    key: String,
    expiry: u64,
    token: String,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/vectors/sas-tokens.jsonl"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            Vector {
                sdk: v["sdk"].as_str().unwrap().to_owned(),
                scenario: v["scenario"].as_str().unwrap().to_owned(),
                resource: v["resource"].as_str().unwrap().to_owned(),
                key_name: v["key_name"].as_str().map(str::to_owned),
                key: v["key"].as_str().unwrap().to_owned(),
                expiry: v["expiry"].as_u64().unwrap(),
                token: v["token"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

#[test]
fn generated_tokens_match_python_sdk_byte_for_byte() {
    let python: Vec<_> = vectors()
        .into_iter()
        .filter(|v| v.sdk.contains("python"))
        .collect();
    assert_eq!(python.len(), 6);
    for v in python {
        let key = SharedAccessKey::from_base64(&v.key).unwrap();
        let token = SasToken::generate(
            &ResourceUri::custom(&v.resource),
            &key,
            v.key_name.as_deref(),
            at(v.expiry),
        );
        assert_eq!(token.secret(), v.token, "scenario {}", v.scenario);
    }
}

#[test]
fn every_official_sdk_token_parses_verifies_and_covers_its_resource() {
    let all = vectors();
    assert_eq!(all.len(), 16);
    for v in all {
        let token = SasToken::parse(&v.token).unwrap();
        let key = SharedAccessKey::from_base64(&v.key).unwrap();
        assert_eq!(token.expiry_unix(), v.expiry);
        assert_eq!(token.key_name(), v.key_name.as_deref());
        token
            .verify([&key], at(v.expiry - 3600))
            .unwrap_or_else(|e| panic!("{} {}: {e}", v.sdk, v.scenario));
        assert!(
            token.covers(&v.resource),
            "{} {} should cover {}",
            v.sdk,
            v.scenario,
            v.resource
        );
    }
}

#[test]
fn node_lower_case_escape_is_verified_against_sr_as_written() {
    // Node writes `*` as `%2a`: re-encoding sr before verifying would break the signature.
    let v = vectors()
        .into_iter()
        .find(|v| v.sdk.contains("node") && v.token.contains("%2a"))
        .unwrap();
    let token = SasToken::parse(&v.token).unwrap();
    assert!(token.signature_matches(&zero_key()));
    assert_eq!(token.resource(), "localhost/devices/dev*(x)!'~");
}

#[test]
fn c_sdk_unencoded_sr_and_lower_case_sig_verify() {
    // The C SDK does not encode sr and writes sig escapes with lower-case hex.
    let key = zero_key();
    let sr = "myhub.azure-devices.net/devices/dev1";
    let sig = STANDARD.encode(key.sign(format!("{sr}\n1700000000").as_bytes()));
    let sig = sig
        .replace('+', "%2b")
        .replace('/', "%2f")
        .replace('=', "%3d");
    let text = format!("SharedAccessSignature sr={sr}&sig={sig}&se=1700000000");
    let token = SasToken::parse(&text).unwrap();
    token.verify([&key], at(1_600_000_000)).unwrap();
    token
        .check_covers_identity("MyHub.azure-devices.net", "dev1", None)
        .unwrap();
}

#[test]
fn java_field_order_and_unknown_fields_are_accepted() {
    let key = zero_key();
    let generated = SasToken::generate(
        &ResourceUri::device("h", "d"),
        &key,
        None,
        at(2_000_000_000),
    );
    let sig = generated
        .secret()
        .split('&')
        .find_map(|f| f.strip_prefix("sig="))
        .unwrap()
        .to_owned();
    let reordered =
        format!("SharedAccessSignature sig={sig}&se=2000000000&x-extra=1&sr=h%2Fdevices%2Fd");
    let token = SasToken::parse(&reordered).unwrap();
    token.verify([&key], at(0)).unwrap();
}

#[test]
fn csharp_double_encoded_ids_are_in_scope() {
    // C# encodes the id, then the whole URI: `dev 1` becomes `dev%25201`.
    let key = zero_key();
    let sr = "h%2Fdevices%2Fdev%25201";
    let sig = STANDARD.encode(key.sign(format!("{sr}\n2000000000").as_bytes()));
    let text = format!(
        "SharedAccessSignature sr={sr}&sig={}&se=2000000000",
        encode_component(&sig)
    );
    let token = SasToken::parse(&text).unwrap();
    token.verify([&key], at(0)).unwrap();
    token.check_covers_identity("h", "dev 1", None).unwrap();
}

#[test]
fn scope_is_a_segment_prefix() {
    let key = zero_key();
    let token = |resource: &str| {
        SasToken::generate(
            &ResourceUri::custom(resource),
            &key,
            Some("p"),
            at(2_000_000_000),
        )
    };
    assert!(token("h").covers("h/devices/d1"));
    assert!(token("h/devices").covers("h/devices/d1/modules/m"));
    assert!(token("h/devices/d1").covers("h/devices/d1"));
    assert!(token("h/devices/d1").covers("h/devices/d1/modules/m"));
    assert!(!token("h/devices/d1").covers("h/devices/d10"));
    assert!(!token("h/devices/d1/modules/m").covers("h/devices/d1"));
    assert!(!token("other").covers("h/devices/d1"));
    assert!(token("https://H/devices/").covers("h/devices/d1"));
    assert_eq!(
        token("h/devices/d1").check_covers_identity("h", "d2", None),
        Err(SasError::OutOfScope("h/devices/d2".into()))
    );
}

#[test]
fn expired_and_wrong_key_tokens_are_refused() {
    let key = zero_key();
    let other = SharedAccessKey::from_bytes(vec![1; 32]).unwrap();
    let token = SasToken::generate(&ResourceUri::device("h", "d"), &key, None, at(1000));
    assert_eq!(
        token.verify([&key], at(1000)),
        Err(SasError::Expired { expiry: 1000 })
    );
    assert_eq!(
        token.verify([&other], at(999)),
        Err(SasError::SignatureMismatch)
    );
    assert_eq!(token.verify([&other, &key], at(999)), Ok(()));
}

#[test]
fn malformed_tokens_give_typed_errors() {
    let cases: &[(&str, SasError)] = &[
        ("sr=a&sig=b&se=1", SasError::MissingPrefix),
        (
            "SharedAccessSignature sr=a&sig=AAAA&se=x",
            SasError::InvalidExpiry,
        ),
        (
            "SharedAccessSignature sr=a&sig=AAAA&se=-1",
            SasError::InvalidExpiry,
        ),
        (
            "SharedAccessSignature sr=a&sig=AAAA&se=99999999999999999999999",
            SasError::InvalidExpiry,
        ),
        (
            "SharedAccessSignature sr=a&sig=AAAA",
            SasError::MissingField("se"),
        ),
        (
            "SharedAccessSignature sr=&sig=AAAA&se=1",
            SasError::MissingField("sr"),
        ),
        (
            "SharedAccessSignature sr=a&se=1",
            SasError::MissingField("sig"),
        ),
        (
            "SharedAccessSignature sr=a&sig=!!!&se=1",
            SasError::InvalidSignatureEncoding,
        ),
        (
            "SharedAccessSignature sr=a&sig=%FF&se=1",
            SasError::InvalidSignatureEncoding,
        ),
        (
            "SharedAccessSignature sr=a&sr=b&sig=AAAA&se=1",
            SasError::DuplicateField("sr".into()),
        ),
        (
            "SharedAccessSignature sr=a&junk&se=1",
            SasError::MalformedField("junk".into()),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(&SasToken::parse(text).unwrap_err(), expected, "{text}");
    }
}

#[test]
fn keys_reject_bad_base64_and_accept_missing_padding() {
    assert_eq!(
        SharedAccessKey::from_base64("").unwrap_err(),
        SasError::InvalidKey
    );
    assert_eq!(
        SharedAccessKey::from_base64("not base64!").unwrap_err(),
        SasError::InvalidKey
    );
    let unpadded = SharedAccessKey::from_base64(ZERO_KEY.trim_end_matches('=')).unwrap();
    assert_eq!(unpadded.to_base64(), ZERO_KEY);
    let generated = SharedAccessKey::generate().unwrap();
    assert_eq!(generated.to_base64().len(), 44);
}

#[test]
fn secrets_stay_out_of_debug_and_errors() {
    let key = zero_key();
    let token = SasToken::generate(
        &ResourceUri::device("h", "d"),
        &key,
        None,
        at(2_000_000_000),
    );
    let sig = token
        .secret()
        .split("sig=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert_eq!(format!("{key:?}"), "SharedAccessKey(<redacted>)");
    let debug = format!("{token:?}");
    assert!(!debug.contains(sig), "{debug}");
    assert!(!debug.contains(ZERO_KEY));
}

#[test]
fn dps_group_key_derivation() {
    // Derived key = HMAC-SHA256(group key, registration id), base64.
    let group = zero_key();
    let derived = group.derive_for_registration("reg-1");
    assert_eq!(derived.to_base64(), STANDARD.encode(group.sign(b"reg-1")));
}

proptest! {
    #[test]
    fn generate_parse_verify_round_trip(
        host in "[a-z0-9.-]{1,20}",
        device in "\\PC{1,20}",
        module in proptest::option::of("\\PC{1,10}"),
        key_name in proptest::option::of("[A-Za-z0-9 ]{1,10}"),
        key in proptest::collection::vec(any::<u8>(), 1..64),
        expiry in 1u64..4_000_000_000,
    ) {
        let key = SharedAccessKey::from_bytes(key).unwrap();
        let resource = match &module {
            Some(m) => ResourceUri::module(&host, &device, m),
            None => ResourceUri::device(&host, &device),
        };
        let token = SasToken::generate(&resource, &key, key_name.as_deref(), at(expiry));
        let parsed = SasToken::parse(token.secret()).unwrap();
        prop_assert_eq!(&parsed, &token);
        prop_assert_eq!(parsed.resource(), resource.as_str());
        prop_assert!(parsed.verify([&key], at(expiry - 1)).is_ok());
        prop_assert!(parsed.check_covers_identity(&host, &device, module.as_deref()).is_ok());
    }

    #[test]
    fn parse_never_panics(text in "\\PC*") {
        let _ = SasToken::parse(&text);
        let _ = SasToken::parse(&format!("SharedAccessSignature {text}"));
    }
}

/// Any `se` a client sends, up to `u64::MAX`, gives an expiry without overflowing the time
/// type (a device can sign such a token with its own key).
#[test]
fn a_huge_expiry_does_not_overflow() {
    for se in [u64::MAX, i64::MAX as u64 + 1, 253_402_300_800] {
        let token = SasToken::parse(&format!(
            "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=AAAA&se={se}"
        ))
        .expect("parses");
        assert_eq!(token.expires_at(), at(253_402_300_799));
    }
}
