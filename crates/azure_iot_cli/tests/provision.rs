//! `azure-iot device provision`: the real binary registers devices with the emulator's DPS
//! (found through hub.json) with a group key and with an X.509 certificate, and the printed
//! connection string works at the hub; a wrong key fails with DPS's refusal and no secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use azure_iot_core::sas::SharedAccessKey;
use azure_iot_test::{dps_put, key_enrollment};

mod common;
use common::{cli, hub};

#[tokio::test(flavor = "multi_thread")]
async fn a_group_member_is_provisioned_and_its_connection_string_sends() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hub = hub(d).await;
    let group_key = SharedAccessKey::generate().unwrap().to_base64();
    dps_put(
        &hub,
        "/enrollmentGroups/fleet",
        key_enrollment("enrollmentGroupId", "fleet", &group_key),
    )
    .await;
    for transport in ["mqtt", "amqp-ws", "https"] {
        let id = format!("sensor-{transport}");
        let out = cli(
            d,
            &[
                "device",
                "provision",
                "--registration-id",
                &id,
                "--group-key",
                &group_key,
                "--transport",
                transport,
            ],
        )
        .await;
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{transport}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("assigned hub:      {}", hub.hostname())),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("device id:         {id}")),
            "{stdout}"
        );
        let derived = SharedAccessKey::from_base64(&group_key)
            .unwrap()
            .derive_for_registration(&id)
            .to_base64();
        let cs = stdout
            .lines()
            .find_map(|l| l.strip_prefix("connection string: "))
            .unwrap();
        assert!(cs.ends_with(&format!(";SharedAccessKey={derived}")), "{cs}");
        let sent = cli(
            d,
            &[
                "device",
                "simulate",
                "--device-connection-string",
                cs,
                "--count",
                "1",
            ],
        )
        .await;
        assert!(
            sent.status.success(),
            "{}",
            String::from_utf8_lossy(&sent.stderr)
        );
    }

    let wrong = SharedAccessKey::generate().unwrap().to_base64();
    dps_put(
        &hub,
        "/enrollments/solo",
        key_enrollment("registrationId", "solo", &group_key),
    )
    .await;
    let out = cli(
        d,
        &[
            "device",
            "provision",
            "--registration-id",
            "solo",
            "--symmetric-key",
            &wrong,
            "--transport",
            "https",
        ],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401002"), "{stderr}");
    assert!(!stderr.contains(&wrong), "{stderr}");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_x509_device_is_provisioned_with_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hub = hub(d).await;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cam-9");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(d.join("cam.pem"), cert.pem()).unwrap();
    std::fs::write(d.join("cam.key"), key.serialize_pem()).unwrap();
    dps_put(
        &hub,
        "/enrollments/cam-9",
        serde_json::json!({"registrationId": "cam-9",
            "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": cert.pem()}}}}}),
    )
    .await;
    let cert_path = d.join("cam.pem");
    let key_path = d.join("cam.key");
    let out = cli(
        d,
        &[
            "device",
            "provision",
            "--cert",
            cert_path.to_str().unwrap(),
            "--key",
            key_path.to_str().unwrap(),
            "--transport",
            "amqp",
        ],
    )
    .await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("device id:         cam-9"), "{stdout}");
    assert!(!stdout.contains("connection string"), "{stdout}");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tpm_location_without_tpm_is_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hub = hub(d).await;
    let key = SharedAccessKey::generate().unwrap().to_base64();
    for location in [
        ["--tpm-simulator", "127.0.0.1:2321"],
        ["--tpm-device", "/dev/tpmrm0"],
    ] {
        let out = cli(
            d,
            &[
                "device",
                "provision",
                "--registration-id",
                "thermo-1",
                "--symmetric-key",
                &key,
                location[0],
                location[1],
            ],
        )
        .await;
        let err = common::one_line_error(&out);
        assert!(err.contains("add --tpm"), "{err}");
    }
    hub.shutdown().await;
}
