//! The command layer against a real software TPM (swtpm), checked with tpm2-tools.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use azure_iot_test::SoftwareTpm;
use azure_iot_tpm::{EK_HANDLE, Error, IDENTITY_KEY_HANDLE, Location, SRK_HANDLE, Tpm};

fn open(swtpm: &SoftwareTpm) -> Tpm {
    Tpm::open(&Location::Simulator {
        host: "127.0.0.1".to_owned(),
        port: swtpm.port(),
    })
    .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `TPM2B`'s contents and the rest.
fn split_tpm2b(bytes: &[u8]) -> (&[u8], &[u8]) {
    let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
    (&bytes[2..2 + len], &bytes[2 + len..])
}

#[test]
fn ek_and_srk_are_created_persisted_and_reused() {
    let swtpm = SoftwareTpm::start();
    let mut tpm = open(&swtpm);
    assert!(!tpm.exists(EK_HANDLE).unwrap());
    let ek = tpm.endorsement_key().unwrap();
    let srk = tpm.storage_root_key().unwrap();
    assert!(tpm.exists(EK_HANDLE).unwrap() && tpm.exists(SRK_HANDLE).unwrap());
    assert_ne!(ek.public, srk.public);
    drop(tpm);

    // A second connection finds the same keys.
    let mut again = open(&swtpm);
    assert_eq!(again.endorsement_key().unwrap(), ek);
    assert_eq!(again.storage_root_key().unwrap(), srk);
    // swtpm serves one connection at a time: close ours before tpm2-tools connects.
    drop(again);

    // tpm2-tools reads the same public area and Name…
    swtpm.tool(
        "readpublic",
        &["-c", "0x81010001", "-o", "ek.pub", "-n", "ek.name"],
    );
    assert_eq!(swtpm.read("ek.pub"), ek.public);
    assert_eq!(swtpm.read("ek.name"), ek.name);
    // …and its own TCG-default EK is the same key: our template is the profile's.
    swtpm.tool(
        "createek",
        &["-c", "ek.ctx", "-G", "rsa", "-u", "ek-tools.pub"],
    );
    assert_eq!(swtpm.read("ek-tools.pub"), ek.public);
}

#[test]
fn activate_credential_releases_what_makecredential_sealed() {
    let swtpm = SoftwareTpm::start();
    let mut tpm = open(&swtpm);
    let ek = tpm.endorsement_key().unwrap();
    let srk = tpm.storage_root_key().unwrap();
    swtpm.write("ek.pub", &ek.public);
    let credential = b"0123456789abcdef";
    swtpm.write("secret.bin", credential);
    swtpm.tool(
        "makecredential",
        &[
            "-T",
            "none",
            "-u",
            "ek.pub",
            "-s",
            "secret.bin",
            "-n",
            &hex(&srk.name),
            "-o",
            "cred.out",
        ],
    );
    // tpm2-tools' file: 4-byte magic, 4-byte version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
    let file = swtpm.read("cred.out");
    let (blob, rest) = split_tpm2b(&file[8..]);
    let (secret, _) = split_tpm2b(rest);
    let released = tpm.activate_with_ek(blob, secret).unwrap();
    assert_eq!(released.expose(), credential);
    assert!(!format!("{released:?}").contains("0123"));

    // A tampered blob is refused with a decoded code naming the command.
    let mut bad = blob.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let err = tpm.activate_with_ek(&bad, secret).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Tpm {
                command: "ActivateCredential",
                ..
            }
        ),
        "{err}"
    );
    // The failed attempt flushed its session: another activation still works.
    assert_eq!(
        tpm.activate_with_ek(blob, secret).unwrap().expose(),
        credential
    );
}

#[test]
fn hmac_inside_the_tpm_matches_ring_short_and_long() {
    let swtpm = SoftwareTpm::start();
    open(&swtpm).storage_root_key().unwrap();
    let key = b"an hmac identity key of 32 bytes";
    swtpm.write("key.bin", key);
    // tpm2-tools wraps a known key for the SRK (a software duplication, no inner wrapper).
    swtpm.tool(
        "import",
        &[
            "-C",
            "0x81000001",
            "-G",
            "hmac",
            "-i",
            "key.bin",
            "-u",
            "key.pub",
            "-r",
            "key.priv",
        ],
    );
    let mut tpm = open(&swtpm);
    let public = swtpm.read("key.pub");
    let private = swtpm.read("key.priv");
    let loaded = tpm
        .load(SRK_HANDLE, split_tpm2b(&private).0, split_tpm2b(&public).0)
        .unwrap();
    let ring_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    for data in [
        b"0ne0001/registrations/dev-1\n1700000000".to_vec(),
        vec![7u8; 1024],
        vec![9u8; 3000], // beyond one TPM2_HMAC: an HMAC sequence
    ] {
        let expected = ring::hmac::sign(&ring_key, &data);
        assert_eq!(
            tpm.hmac(loaded, &data).unwrap(),
            expected.as_ref(),
            "{} bytes",
            data.len()
        );
    }
    // Persisted at the identity handle, it signs the same.
    tpm.evict_control(loaded, IDENTITY_KEY_HANDLE).unwrap();
    tpm.flush_context(loaded).unwrap();
    let expected = ring::hmac::sign(&ring_key, b"x");
    assert_eq!(tpm.identity_hmac(b"x").unwrap(), expected.as_ref());
}

#[test]
fn refusals_are_typed_and_a_missing_tpm_is_a_transport_error() {
    let swtpm = SoftwareTpm::start();
    let mut tpm = open(&swtpm);
    assert!(!tpm.exists(IDENTITY_KEY_HANDLE).unwrap());
    let err = tpm.identity_hmac(b"x").unwrap_err();
    let code = err.response_code().unwrap();
    assert_eq!(code.name(), Some("TPM_RC_HANDLE"), "{err}");
    assert!(
        err.to_string()
            .starts_with("TPM2_HMAC failed: TPM_RC_HANDLE"),
        "{err}"
    );

    let port = swtpm.port();
    drop(tpm);
    drop(swtpm);
    let err = Tpm::open(&Location::Simulator {
        host: "127.0.0.1".to_owned(),
        port,
    })
    .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let err = Tpm::open(&Location::Device("/nonexistent/tpmrm0".into())).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/tpmrm0"), "{err}");
}
