//! The provisioning service client against the in-process emulator's DPS over real TLS:
//! enrollment and group CRUD with ETags (412 on a stale one), attestation mechanisms, bulk
//! operations with a failing item, query paging over several pages, registration states after
//! a device registered over HTTPS, and DPS's errors (404, 401 with a wrong key).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_emulator::EmulatorHandle;
use azure_iot_provisioning_service::{
    Attestation, BulkEnrollmentGroupOperation, BulkEnrollmentOperation, BulkMode, EnrollmentGroup,
    ErrorKind, IfMatch, IndividualEnrollment, ProvisioningServiceClient,
    ProvisioningServiceClientOptions, ProvisioningStatus, RegistrationStatus, derive_device_key,
};
use azure_iot_test::emulator;
use futures_util::TryStreamExt;

const WAIT: Duration = Duration::from_secs(10);

fn options(hub: &EmulatorHandle) -> ProvisioningServiceClientOptions {
    ProvisioningServiceClientOptions::default()
        .trusted_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .request_timeout(WAIT)
}

fn dps(hub: &EmulatorHandle) -> ProvisioningServiceClient {
    ProvisioningServiceClient::from_connection_string(&hub.dps_connection_string(), options(hub))
        .unwrap()
}

fn symmetric(id: &str) -> IndividualEnrollment {
    IndividualEnrollment::new(id, Attestation::symmetric_key("", ""))
}

#[tokio::test]
async fn enrollments_create_get_update_delete_with_etags() {
    let hub = emulator().await;
    let dps = dps(&hub);

    let created = dps
        .create_or_update_enrollment(&symmetric("crud-1"), IfMatch::Any)
        .await
        .unwrap();
    let etag = created.settings.etag.clone().expect("an etag");
    let keys = created.attestation.symmetric_key.clone().expect("keys");
    assert!(!keys.primary_key.is_empty(), "DPS generates missing keys");
    let fetched = dps.get_enrollment("crud-1").await.unwrap();
    assert_eq!(fetched.settings.etag.as_deref(), Some(etag.as_str()));
    let mechanism = dps.get_enrollment_attestation("crud-1").await.unwrap();
    assert_eq!(
        mechanism.symmetric_key.unwrap().primary_key,
        keys.primary_key
    );

    // Update under the current ETag; then the old one is stale for updates and deletes.
    let mut changed = fetched.clone();
    changed.settings.provisioning_status = ProvisioningStatus::Disabled;
    changed.device_id = Some("hub-crud-1".into());
    let updated = dps
        .create_or_update_enrollment(&changed, IfMatch::ETag(etag.clone()))
        .await
        .unwrap();
    assert_ne!(updated.settings.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(
        updated.settings.provisioning_status,
        ProvisioningStatus::Disabled
    );
    assert_eq!(
        updated.settings.created_date_time_utc,
        created.settings.created_date_time_utc
    );
    let stale = dps
        .create_or_update_enrollment(&changed, IfMatch::ETag(etag.clone()))
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::PreconditionFailed, "{stale}");
    assert_eq!(stale.status(), Some(412));
    assert!(stale.error_code().unwrap().starts_with("412"), "{stale:?}");
    let stale = dps
        .delete_enrollment("crud-1", IfMatch::ETag(etag))
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::PreconditionFailed);

    dps.delete_enrollment(
        "crud-1",
        IfMatch::etag_or_any(updated.settings.etag.as_deref()),
    )
    .await
    .unwrap();
    let gone = dps.get_enrollment("crud-1").await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
    assert!(gone.error_code().unwrap().starts_with("404"), "{gone:?}");
    let gone = dps
        .delete_enrollment("crud-1", IfMatch::Any)
        .await
        .unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn groups_have_keys_devices_derive_from() {
    let hub = emulator().await;
    let dps = dps(&hub);
    let group = EnrollmentGroup::new("floor-1", Attestation::symmetric_key("", ""));
    let created = dps
        .create_or_update_enrollment_group(&group, IfMatch::Any)
        .await
        .unwrap();
    let keys = dps
        .get_enrollment_group_attestation("floor-1")
        .await
        .unwrap()
        .symmetric_key
        .unwrap();
    assert_eq!(
        created.attestation.symmetric_key.unwrap().primary_key,
        keys.primary_key
    );
    assert_eq!(
        derive_device_key(&keys.primary_key, "dev-a").unwrap().len(),
        44
    );
    let stale = dps
        .create_or_update_enrollment_group(&group, IfMatch::ETag("\"nope\"".into()))
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::PreconditionFailed);
    let listed: Vec<String> = dps
        .query_enrollment_groups("SELECT * FROM enrollmentGroups")
        .into_stream()
        .map_ok(|g| g.enrollment_group_id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed, ["floor-1"]);

    // Groups in bulk: a TPM group is refused (TPM attests single devices), by its id.
    let tpm_group = EnrollmentGroup::new(
        "floor-tpm",
        Attestation::tpm(
            "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAxsj2gUScTk1UjuioeTlfGYZrrimExB+bScH75adUMRIi2UOMxG1kw4y+9RW/IVoMl4e620VxZad0ARX2gUqVjYO7KPVt3dyKhZS3dkcvfBisBhP1XH9B33VqHG9SHnbnQXdBUaCgKAfxome8UmBKfe+naTsE5fkvjb/do3/dD6l4sGBwFCnKRdln4XpM03zLpoHFao8zOwt8l/uP3qUIxmCYv9A7m69Ms+5/pCkTu/rK4mRDsfhZ0QLfbzVI6zQFOKF/rwsfBtFeWlWtcuJMKlXdD8TXWElTzgh7JS4qhFzreL0c1mI0GCj+Aws0usZh7dLIVPnlgZcBhgy1SSDQMQ==",
        ),
    );
    let result = dps
        .bulk_enrollment_groups(&BulkEnrollmentGroupOperation {
            mode: BulkMode::Create,
            enrollment_groups: vec![
                EnrollmentGroup::new("floor-2", Attestation::symmetric_key("", "")),
                tpm_group,
            ],
        })
        .await
        .unwrap();
    assert!(!result.is_successful);
    assert_eq!(result.errors.len(), 1, "{result:?}");
    assert_eq!(
        result.errors[0].enrollment_group_id.as_deref(),
        Some("floor-tpm")
    );
    assert!(result.errors[0].error_code >= 400_000, "{result:?}");
    let result = dps
        .bulk_enrollment_groups(&BulkEnrollmentGroupOperation {
            mode: BulkMode::Create,
            enrollment_groups: vec![EnrollmentGroup::new(
                "floor-2",
                Attestation::symmetric_key("", ""),
            )],
        })
        .await
        .unwrap();
    assert!(result.is_successful, "{result:?}");
    dps.get_enrollment_group("floor-2").await.unwrap();
    dps.delete_enrollment_group("floor-1", IfMatch::Any)
        .await
        .unwrap();
    let gone = dps.get_enrollment_group("floor-1").await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn bulk_lists_the_failing_item_and_queries_page() {
    let hub = emulator().await;
    let dps = dps(&hub);
    // 25 enrollments in three bulk calls.
    let ids: Vec<String> = (0..25).map(|i| format!("bulk-{i:02}")).collect();
    for chunk in ids.chunks(10) {
        let result = dps
            .bulk_enrollments(&BulkEnrollmentOperation {
                mode: BulkMode::Create,
                enrollments: chunk.iter().map(|id| symmetric(id)).collect(),
            })
            .await
            .unwrap();
        assert!(result.is_successful, "{result:?}");
    }
    // Creating an existing one fails for that item, with its id and a DPS code.
    let result = dps
        .bulk_enrollments(&BulkEnrollmentOperation {
            mode: BulkMode::Create,
            enrollments: vec![symmetric("bulk-new"), symmetric("bulk-03")],
        })
        .await
        .unwrap();
    assert!(!result.is_successful);
    assert_eq!(result.errors.len(), 1, "{result:?}");
    assert_eq!(result.errors[0].registration_id.as_deref(), Some("bulk-03"));
    assert!(result.errors[0].error_code >= 400_000, "{result:?}");

    // Page by page, 10 at a time.
    let mut query = dps
        .query_enrollments("SELECT * FROM enrollments")
        .page_size(10);
    let mut pages = Vec::new();
    while let Some(page) = query.next_page().await.unwrap() {
        pages.push(page.len());
        assert!(pages.len() <= 10, "the pages never end: {pages:?}");
        if pages.len() < 3 {
            assert!(query.continuation_token().is_some());
        }
    }
    assert!(pages.len() >= 3, "{pages:?}");
    assert!(pages.iter().all(|&n| n <= 10), "{pages:?}");
    let mut seen: Vec<String> = dps
        .query_enrollments("*")
        .page_size(7)
        .into_stream()
        .map_ok(|e| e.registration_id)
        .try_collect()
        .await
        .unwrap();
    seen.sort();
    let mut expected = ids.clone();
    if seen.len() > expected.len() {
        // "bulk-new" was not written: the emulator's bulk is all or nothing.
        expected.push("bulk-new".into());
    }
    assert_eq!(seen, expected);

    // Delete them in bulk.
    let result = dps
        .bulk_enrollments(&BulkEnrollmentOperation {
            mode: BulkMode::Delete,
            enrollments: ids[..10].iter().map(|id| symmetric(id)).collect(),
        })
        .await
        .unwrap();
    assert!(result.is_successful, "{result:?}");
    assert_eq!(
        dps.get_enrollment("bulk-00").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn registration_states_of_a_group_after_devices_register() {
    let hub = emulator().await;
    let dps = dps(&hub);
    let group = dps
        .create_or_update_enrollment_group(
            &EnrollmentGroup::new("line-2", Attestation::symmetric_key("", "")),
            IfMatch::Any,
        )
        .await
        .unwrap();
    let group_key = group.attestation.symmetric_key.unwrap().primary_key;
    for device in ["press-1", "press-2"] {
        let key = derive_device_key(&group_key, device).unwrap();
        let status = azure_iot_test::register_over_https(&hub, device, &key).await;
        assert_eq!(status["status"], "assigned", "{status}");
    }
    let state = dps.get_registration_state("press-1").await.unwrap();
    assert_eq!(state.status, RegistrationStatus::Assigned);
    assert_eq!(state.device_id.as_deref(), Some("press-1"));
    assert!(state.assigned_hub.is_some());
    let mut ids: Vec<String> = dps
        .query_registration_states("line-2", "*")
        .unwrap()
        .page_size(1)
        .into_stream()
        .map_ok(|s| s.registration_id)
        .try_collect()
        .await
        .unwrap();
    ids.sort();
    assert_eq!(ids, ["press-1", "press-2"]);

    let stale = dps
        .delete_registration_state("press-1", IfMatch::ETag("\"old\"".into()))
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::PreconditionFailed);
    dps.delete_registration_state("press-1", IfMatch::etag_or_any(state.etag.as_deref()))
        .await
        .unwrap();
    let gone = dps.get_registration_state("press-1").await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn a_wrong_key_is_401_and_the_error_names_no_secret() {
    let hub = emulator().await;
    let cs = hub.dps_connection_string();
    let wrong_key = "d3Jvbmd3cm9uZ3dyb25nd3Jvbmd3cm9uZ3dyb25nMTI=";
    let (head, _) = cs.split_once("SharedAccessKey=").unwrap();
    let wrong = ProvisioningServiceClient::from_connection_string(
        &format!("{head}SharedAccessKey={wrong_key}"),
        options(&hub),
    )
    .unwrap();
    let e = wrong.get_enrollment("any").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    assert_eq!(e.status(), Some(401));
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains(wrong_key) && !text.contains("sig="),
        "{text}"
    );
    let e = wrong.query_enrollments("*").all().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
}
