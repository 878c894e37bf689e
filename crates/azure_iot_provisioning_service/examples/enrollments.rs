//! Walks through the DPS service API: creates a symmetric-key enrollment group and an
//! individual enrollment, updates the group under its ETag (and shows the 412 a stale ETag
//! gets), derives a device key, lists enrollments page by page and the group's registration
//! states, then deletes what it created.
//!
//! Against the local emulator (its `hub.json` lists the DPS service connection string and the
//! HTTPS port; `ca.pem` is its CA):
//!
//! ```sh
//! azure-iot hub start --data-dir /tmp/hub --https-port 8443 &
//! export PROVISIONING_CONNECTION_STRING="$(jq -r .dps.connection_string /tmp/hub/hub.json)"
//! export PROVISIONING_CA_PEM=/tmp/hub/ca.pem PROVISIONING_HTTPS_PORT=8443
//! cargo run -p azure_iot_provisioning_service --example enrollments
//! ```
//!
//! Against a real DPS, its `provisioningserviceowner` connection string is enough (Azure
//! portal: the DPS's "Shared access policies").

// An example reports progress on standard output.
#![allow(clippy::print_stdout)]

use azure_iot_provisioning_service::{
    Attestation, EnrollmentGroup, ErrorKind, IfMatch, IndividualEnrollment,
    ProvisioningServiceClient, ProvisioningServiceClientOptions, derive_device_key,
};
use futures_util::TryStreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dps = client()?;
    let suffix = std::process::id();
    let group_id = format!("example-group-{suffix}");
    let registration_id = format!("example-device-{suffix}");

    // Empty keys: DPS generates them and answers with them.
    let group = dps
        .create_or_update_enrollment_group(
            &EnrollmentGroup::new(group_id.as_str(), Attestation::symmetric_key("", "")),
            IfMatch::Any,
        )
        .await?;
    println!("created group {group_id} (etag {:?})", group.settings.etag);

    let mut disabled = group.clone();
    disabled.settings.provisioning_status =
        azure_iot_provisioning_service::ProvisioningStatus::Disabled;
    let updated = dps
        .create_or_update_enrollment_group(
            &disabled,
            IfMatch::etag_or_any(group.settings.etag.as_deref()),
        )
        .await?;
    println!(
        "disabled it under its etag; new etag {:?}",
        updated.settings.etag
    );
    match dps
        .create_or_update_enrollment_group(
            &disabled,
            IfMatch::etag_or_any(group.settings.etag.as_deref()),
        )
        .await
    {
        Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
            println!("the stale etag is refused: {e}");
        }
        other => println!("unexpected: {other:?}"),
    }

    let keys = dps.get_enrollment_group_attestation(&group_id).await?;
    if let Some(keys) = keys.symmetric_key {
        let device_key = derive_device_key(&keys.primary_key, &registration_id)?;
        println!(
            "device {registration_id} registers with a key derived from the group key ({} characters)",
            device_key.len()
        );
    }

    let enrollment = dps
        .create_or_update_enrollment(
            &IndividualEnrollment::new(
                registration_id.as_str(),
                Attestation::symmetric_key("", ""),
            ),
            IfMatch::Any,
        )
        .await?;
    println!("created enrollment {}", enrollment.registration_id);

    let mut enrollments = dps
        .query_enrollments("SELECT * FROM enrollments")
        .page_size(10)
        .into_stream();
    while let Some(enrollment) = enrollments.try_next().await? {
        println!(
            "  enrollment {} ({:?})",
            enrollment.registration_id, enrollment.settings.provisioning_status
        );
    }
    let states = dps.query_registration_states(&group_id, "*")?.all().await?;
    println!("{} device(s) of {group_id} registered", states.len());

    dps.delete_enrollment(&registration_id, IfMatch::Any)
        .await?;
    dps.delete_enrollment_group(&group_id, IfMatch::Any).await?;
    println!("deleted both");
    Ok(())
}

/// A client from `PROVISIONING_CONNECTION_STRING`, trusting `PROVISIONING_CA_PEM` and using
/// `PROVISIONING_HTTPS_PORT` when they are set.
fn client() -> Result<ProvisioningServiceClient, Box<dyn std::error::Error>> {
    let connection_string = std::env::var("PROVISIONING_CONNECTION_STRING").map_err(
        |_| "set PROVISIONING_CONNECTION_STRING to a DPS shared access policy's connection string",
    )?;
    let mut options = ProvisioningServiceClientOptions::default();
    if let Ok(path) = std::env::var("PROVISIONING_CA_PEM") {
        let pem = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read PROVISIONING_CA_PEM ({path}): {e}"))?;
        options = options.trusted_ca_pem(pem);
    }
    if let Ok(port) = std::env::var("PROVISIONING_HTTPS_PORT") {
        options = options.https_port(
            port.parse()
                .map_err(|e| format!("PROVISIONING_HTTPS_PORT={port:?} is not a port: {e}"))?,
        );
    }
    Ok(ProvisioningServiceClient::from_connection_string(
        &connection_string,
        options,
    )?)
}
