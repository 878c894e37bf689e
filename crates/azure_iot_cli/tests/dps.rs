//! `azure-iot dps …` run as the real binary against an in-process emulator whose `hub.json`
//! names its DPS: enrollments and groups created, shown (keys hidden unless asked), listed in
//! text and JSON, deleted under ETags; a group's derived key registering a device over HTTPS,
//! then its registration state shown, listed and deleted; DPS's errors as one line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;

use serde_json::Value;

mod common;
use common::{cli, hub, json_out, one_line_error, stdout};

/// `azure-iot dps {line}`, the line split at white space (no argument here contains any).
async fn dps(dir: &Path, line: &str) -> Output {
    let args: Vec<&str> = std::iter::once("dps")
        .chain(line.split_whitespace())
        .collect();
    cli(dir, &args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_commands_create_show_list_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let _hub = hub(dir.path()).await;
    let d = dir.path();

    let created = json_out(
        &dps(
            d,
            r#"enrollment create --registration-id cli-dev-1 --initial-twin {"tags":{"floor":3}} --edge --reprovision never"#,
        )
        .await,
    );
    assert_eq!(created["registrationId"], "cli-dev-1");
    assert_eq!(created["capabilities"]["iotEdge"], true);
    assert_eq!(created["initialTwin"]["tags"]["floor"], 3);
    assert_eq!(created["reprovisionPolicy"]["updateHubAssignment"], false);
    // Create prints the generated keys: that is how the user learns them.
    let key = created["attestation"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!key.is_empty());
    let etag = created["etag"].as_str().unwrap().to_owned();

    let shown = stdout(&dps(d, "enrollment show --registration-id cli-dev-1").await);
    assert!(!shown.contains(&key), "keys are hidden by default: {shown}");
    let with_keys =
        stdout(&dps(d, "enrollment show --registration-id cli-dev-1 --show-keys").await);
    assert!(with_keys.contains(&key));

    json_out(
        &dps(
            d,
            "enrollment create --registration-id cli-dev-2 --disabled",
        )
        .await,
    );
    let text = stdout(&dps(d, "enrollment list").await);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("cli-dev-1\tenabled\tsymmetricKey"),
        "{text}"
    );
    assert!(lines[1].starts_with("cli-dev-2\tdisabled"), "{text}");
    let json_lines = stdout(&dps(d, "enrollment list --output json --page-size 1").await);
    let items: Vec<Value> = json_lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(items.len(), 2);
    assert!(!json_lines.contains(&key));
    let top = stdout(&dps(d, "enrollment list --top 1").await);
    assert_eq!(top.lines().count(), 1);

    // A changed enrollment refuses the old ETag.
    let update = format!("enrollment create --registration-id cli-dev-1 --etag {etag}");
    json_out(&dps(d, &update).await);
    let delete = format!("enrollment delete --registration-id cli-dev-1 --etag {etag}");
    let err = one_line_error(&dps(d, &delete).await);
    assert!(err.contains("412"), "{err}");
    let out = dps(d, "enrollment delete --registration-id cli-dev-1").await;
    assert!(out.status.success(), "{out:?}");
    let err = one_line_error(&dps(d, "enrollment show --registration-id cli-dev-1").await);
    assert!(err.contains("404"), "{err}");
    let err = one_line_error(&dps(d, "enrollment show --registration-id bad/id").await);
    assert!(err.contains("registration id"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_key_registers_devices_whose_states_the_cli_shows() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let d = dir.path();

    let group = json_out(&dps(d, "enrollment-group create --group-id line-1").await);
    let group_key = group["attestation"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = stdout(&dps(d, "enrollment-group show --group-id line-1").await);
    assert!(!shown.contains(&group_key), "{shown}");
    let listed = stdout(&dps(d, "enrollment-group list").await);
    assert!(
        listed.starts_with("line-1\tenabled\tsymmetricKey"),
        "{listed}"
    );

    let derive = "enrollment-group derive-key --group-id line-1 --registration-id robot-1";
    let derived = stdout(&dps(d, derive).await).trim().to_owned();
    assert_eq!(
        derived,
        azure_iot_provisioning_service::derive_device_key(&group_key, "robot-1").unwrap()
    );
    let offline = stdout(&dps(d, &format!("{derive} --group-key {group_key}")).await);
    assert_eq!(offline.trim(), derived);

    let status = azure_iot_test::register_over_https(&hub, "robot-1", &derived).await;
    assert_eq!(status["status"], "assigned", "{status}");

    let state = json_out(&dps(d, "registration show --registration-id robot-1").await);
    assert_eq!(state["status"], "assigned");
    assert_eq!(state["deviceId"], "robot-1");
    let states = stdout(&dps(d, "registration list --group-id line-1").await);
    assert!(states.starts_with("robot-1\tassigned\t"), "{states}");
    let out = dps(d, "registration delete --registration-id robot-1").await;
    assert!(out.status.success(), "{out:?}");
    let err = one_line_error(&dps(d, "registration show --registration-id robot-1").await);
    assert!(err.contains("404"), "{err}");

    let out = dps(d, "enrollment-group delete --group-id line-1").await;
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_is_one_line_naming_401_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let d = dir.path();
    let cs = hub.dps_connection_string();
    let (head, _) = cs.split_once("SharedAccessKey=").unwrap();
    let wrong_key = "d3Jvbmd3cm9uZ3dyb25nd3Jvbmd3cm9uZ3dyb25nMTI=";
    let wrong = format!("enrollment list --connection-string {head}SharedAccessKey={wrong_key}");
    let err = one_line_error(&dps(d, &wrong).await);
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains(wrong_key), "{err}");
    let err = one_line_error(&dps(d, "enrollment list --connection-string HostName=x").await);
    assert!(err.contains("connection"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ca_commands_add_list_and_delete_and_groups_reference_them() {
    let dir = tempfile::tempdir().unwrap();
    let _hub = hub(dir.path()).await;
    let d = dir.path();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "CLI Fleet Root");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let root = params.self_signed(&key).unwrap();
    let file = d.join("fleet-root.pem");
    std::fs::write(&file, root.pem()).unwrap();

    let added = stdout(
        &dps(
            d,
            &format!("ca add --name fleet-root --cert {}", file.display()),
        )
        .await,
    );
    assert!(added.contains("registered CA `fleet-root`"), "{added}");
    assert!(added.contains("CLI Fleet Root"), "{added}");
    let listed = stdout(&dps(d, "ca list").await);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 1, "{listed}");
    assert!(lines[0].starts_with("fleet-root\t"), "{listed}");
    // The DPS's registry is its own: the hub's stays empty.
    assert_eq!(stdout(&cli(d, &["hub", "ca", "list"]).await), "");

    let group = json_out(
        &dps(
            d,
            "enrollment-group create --group-id fleet --ca-name fleet-root",
        )
        .await,
    );
    assert_eq!(
        group["attestation"]["x509"]["caReferences"]["primary"],
        "fleet-root"
    );
    let unknown = one_line_error(
        &dps(
            d,
            "enrollment-group create --group-id ghosts --ca-name no-such-ca",
        )
        .await,
    );
    assert!(unknown.contains("no-such-ca"), "{unknown}");

    let deleted = stdout(&dps(d, "ca delete fleet-root").await);
    assert!(deleted.contains("deleted CA `fleet-root`"), "{deleted}");
    assert_eq!(stdout(&dps(d, "ca list").await), "");
    let again = one_line_error(&dps(d, "ca delete fleet-root").await);
    assert!(again.contains("404"), "{again}");
}
