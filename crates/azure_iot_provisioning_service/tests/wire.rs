//! The client against a scripted HTTPS server: what goes on the wire for each operation
//! (method, path, api-version, SAS token, If-Match, paging headers, bodies) and how DPS's
//! answers (models, error bodies, continuation tokens) are read. No emulator involved: these
//! pin the wire facts of docs dps-service.md on their own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mock;

use std::time::Duration;

use azure_iot_core::retry::RetryAttempt;
use azure_iot_provisioning_service::{
    Attestation, BulkEnrollmentOperation, BulkMode, EnrollmentGroup, ErrorKind, IfMatch,
    IndividualEnrollment, ProvisioningServiceClient, ProvisioningServiceClientOptions,
};
use futures_util::TryStreamExt;
use mock::{Answer, Server};
use serde_json::json;

const KEY: &str = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=";

fn client(server: &Server) -> ProvisioningServiceClient {
    let options = ProvisioningServiceClientOptions::default()
        .trusted_ca_pem(server.ca_pem.clone())
        .https_port(server.port)
        .request_timeout(Duration::from_secs(10))
        // Retry at once: the tests never sleep.
        .retry_policy(|attempt: &RetryAttempt| (attempt.attempt < 3).then_some(Duration::ZERO));
    ProvisioningServiceClient::from_connection_string(
        &format!(
            "HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={KEY}"
        ),
        options,
    )
    .unwrap()
}

fn enrollment_json(id: &str, etag: &str) -> serde_json::Value {
    json!({
        "registrationId": id,
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}},
        "provisioningStatus": "enabled",
        "etag": etag,
        "optionalDeviceInformation": {"model": "x"},
        "createdDateTimeUtc": "2026-12-03T10:00:00Z",
    })
}

fn dps_error(code: i64, message: &str) -> serde_json::Value {
    json!({"errorCode": code, "trackingId": "trk-1", "message": message, "timestampUtc": "2026-12-03T10:00:00Z"})
}

#[tokio::test]
async fn create_or_update_puts_the_enrollment_signed_for_the_dps_host() {
    let server = Server::start(vec![
        Answer::json(200, enrollment_json("dev-1", "e1")),
        Answer::json(200, enrollment_json("dev-1", "e2")),
    ])
    .await;
    let dps = client(&server);
    let enrollment = IndividualEnrollment::new("dev-1", Attestation::symmetric_key("", ""));
    let created = dps
        .create_or_update_enrollment(&enrollment, IfMatch::Any)
        .await
        .unwrap();
    assert_eq!(created.settings.etag.as_deref(), Some("e1"));
    // Members the model does not name survive.
    assert_eq!(created.other["optionalDeviceInformation"]["model"], "x");
    dps.create_or_update_enrollment(
        &created,
        IfMatch::etag_or_any(created.settings.etag.as_deref()),
    )
    .await
    .unwrap();

    let seen = server.seen();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].target, "/enrollments/dev-1?api-version=2021-10-01");
    assert_eq!(seen[0].json()["registrationId"], "dev-1");
    assert_eq!(seen[0].json()["attestation"]["type"], "symmetricKey");
    assert_eq!(
        seen[0].header("if-match"),
        None,
        "no condition: no If-Match"
    );
    assert!(
        seen[0]
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let auth = seen[0].header("authorization").unwrap();
    assert!(auth.starts_with("SharedAccessSignature "), "{auth}");
    assert!(
        auth.contains("sr=localhost&") || auth.contains("sr=localhost"),
        "{auth}"
    );
    assert!(auth.contains("skn=provisioningserviceowner"), "{auth}");
    assert_eq!(seen[1].header("if-match"), Some("\"e1\""));
}

#[tokio::test]
async fn a_412_is_a_precondition_failure_with_dps_code_and_no_secret() {
    let server = Server::start(vec![
        Answer::json(412, dps_error(412002, "ETag mismatch.")).header("x-ms-error-code", "412002"),
    ])
    .await;
    let dps = client(&server);
    let group = EnrollmentGroup::new("g-1", Attestation::symmetric_key(KEY, KEY));
    let e = dps
        .create_or_update_enrollment_group(&group, IfMatch::ETag("stale".into()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
    assert_eq!(e.status(), Some(412));
    assert_eq!(e.error_code(), Some("412002"));
    assert_eq!(e.tracking_id(), Some("trk-1"));
    let text = format!("{e} {e:?}");
    assert!(text.contains("ETag mismatch."), "{text}");
    assert!(!text.contains(KEY) && !text.contains("sig="), "{text}");
    // Sent once: a conditional PUT is not repeated, and 412 is permanent anyway.
    assert_eq!(server.seen().len(), 1);
    assert_eq!(
        server.seen()[0].target,
        "/enrollmentGroups/g-1?api-version=2021-10-01"
    );
}

#[tokio::test]
async fn get_delete_and_attestation_use_their_paths() {
    let server = Server::start(vec![
        Answer::json(404, dps_error(404201, "Enrollment not found.")),
        Answer::empty(204),
        Answer::json(200, json!({"type": "symmetricKey", "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}})),
        Answer::json(200, json!({"registrationId": "dev-1", "status": "assigned", "assignedHub": "hub.example", "deviceId": "dev-1", "etag": "r1"})),
        Answer::empty(204),
    ])
    .await;
    let dps = client(&server);
    let e = dps.get_enrollment("dev-1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.error_code(), Some("404201"));
    assert!(e.to_string().contains("Enrollment not found."), "{e}");
    dps.delete_enrollment_group("g-1", IfMatch::ETag("\"q\"".into()))
        .await
        .unwrap();
    let attestation = dps.get_enrollment_attestation("dev-1").await.unwrap();
    assert_eq!(attestation.symmetric_key.unwrap().primary_key, KEY);
    let state = dps.get_registration_state("dev-1").await.unwrap();
    assert_eq!(state.assigned_hub.as_deref(), Some("hub.example"));
    dps.delete_registration_state("dev-1", IfMatch::Any)
        .await
        .unwrap();

    let seen: Vec<_> = server
        .seen()
        .into_iter()
        .map(|s| {
            (
                s.method.clone(),
                s.target.clone(),
                s.header("if-match").map(str::to_owned),
            )
        })
        .collect();
    let v = "?api-version=2021-10-01";
    assert_eq!(
        seen,
        vec![
            ("GET".into(), format!("/enrollments/dev-1{v}"), None),
            (
                "DELETE".into(),
                format!("/enrollmentGroups/g-1{v}"),
                Some("\"q\"".into())
            ),
            (
                "POST".into(),
                format!("/enrollments/dev-1/attestationmechanism{v}"),
                None
            ),
            ("GET".into(), format!("/registrations/dev-1{v}"), None),
            ("DELETE".into(), format!("/registrations/dev-1{v}"), None),
        ]
    );
}

#[tokio::test]
async fn bulk_reports_failed_items_and_refuses_more_than_ten() {
    let server = Server::start(vec![Answer::json(
        200,
        json!({"isSuccessful": false, "errors": [{"registrationId": "b-1", "errorCode": 409201, "errorStatus": "Enrollment already exists."}]}),
    )])
    .await;
    let dps = client(&server);
    let make = |n: usize| -> Vec<IndividualEnrollment> {
        (0..n)
            .map(|i| {
                IndividualEnrollment::new(format!("b-{i}"), Attestation::symmetric_key("", ""))
            })
            .collect()
    };
    for count in [0, 11] {
        let e = dps
            .bulk_enrollments(&BulkEnrollmentOperation {
                mode: BulkMode::Create,
                enrollments: make(count),
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{count}: {e}");
    }
    assert!(
        server.seen().is_empty(),
        "nothing sent for a refused bulk operation"
    );
    let result = dps
        .bulk_enrollments(&BulkEnrollmentOperation {
            mode: BulkMode::UpdateIfMatchEtag,
            enrollments: make(10),
        })
        .await
        .unwrap();
    assert!(!result.is_successful);
    assert_eq!(result.errors[0].registration_id.as_deref(), Some("b-1"));
    assert_eq!(result.errors[0].error_code, 409201);
    let seen = server.seen();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, "/enrollments?api-version=2021-10-01");
    assert_eq!(seen[0].json()["mode"], "updateIfMatchETag");
    assert_eq!(seen[0].json()["enrollments"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn queries_follow_continuation_tokens_with_the_page_size() {
    let server = Server::start(vec![
        Answer::json(
            200,
            json!([enrollment_json("q-1", "a"), enrollment_json("q-2", "b")]),
        )
        .header("x-ms-continuation", "page-2")
        .header("x-ms-item-type", "Enrollment"),
        Answer::json(200, json!([enrollment_json("q-3", "c")]))
            .header("x-ms-item-type", "Enrollment"),
        Answer::json(
            200,
            json!([{"registrationId": "r-1", "status": "assigned"}]),
        )
        .header("x-ms-item-type", "DeviceRegistration"),
    ])
    .await;
    let dps = client(&server);
    let ids: Vec<String> = dps
        .query_enrollments("*")
        .page_size(2)
        .into_stream()
        .map_ok(|e| e.registration_id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids, ["q-1", "q-2", "q-3"]);
    let states = dps
        .query_registration_states("g-1", "*")
        .unwrap()
        .all()
        .await
        .unwrap();
    assert_eq!(states[0].registration_id, "r-1");
    assert!(dps.query_registration_states("bad/group", "*").is_err());

    let seen = server.seen();
    assert_eq!(seen[0].target, "/enrollments/query?api-version=2021-10-01");
    assert_eq!(seen[0].json(), json!({"query": "*"}));
    assert_eq!(seen[0].header("x-ms-max-item-count"), Some("2"));
    assert_eq!(seen[0].header("x-ms-continuation"), None);
    assert_eq!(seen[1].header("x-ms-continuation"), Some("page-2"));
    assert_eq!(
        seen[2].target,
        "/registrations/g-1/query?api-version=2021-10-01"
    );
}

#[tokio::test]
async fn throttling_is_retried_and_unauthorized_is_not() {
    let server = Server::start(vec![
        Answer::json(429, dps_error(429001, "Too many requests.")),
        Answer::json(200, enrollment_json("dev-1", "e1")),
        Answer::json(401, dps_error(401002, "Unauthorized.")),
    ])
    .await;
    let dps = client(&server);
    dps.get_enrollment("dev-1").await.unwrap();
    let e = dps.get_enrollment("dev-1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert_eq!(e.error_code(), Some("401002"));
    assert!(!e.is_transient());
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test]
async fn bad_ids_fail_before_anything_is_sent() {
    let server = Server::start(Vec::new()).await;
    let dps = client(&server);
    for id in ["", "has space", "-x", &"a".repeat(129)] {
        let e = dps.get_enrollment(id).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{id}");
    }
    let e = azure_iot_provisioning_service::derive_device_key("not base64!", "dev-1").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn a_host_dns_does_not_know_is_reached_at_the_connect_address() {
    let server = Server::start(vec![Answer::json(200, enrollment_json("dev-1", "e1"))]).await;
    let options = ProvisioningServiceClientOptions::default()
        .trusted_ca_pem(server.ca_pem.clone())
        .https_port(server.port)
        .connect_address(std::net::Ipv4Addr::LOCALHOST.into());
    let dps = ProvisioningServiceClient::from_connection_string(
        &format!(
            "HostName={};SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={KEY}",
            mock::UNRESOLVABLE
        ),
        options,
    )
    .unwrap();
    dps.get_enrollment("dev-1").await.unwrap();
    let seen = server.seen();
    assert_eq!(
        seen[0].header("host"),
        Some(format!("{}:{}", mock::UNRESOLVABLE, server.port).as_str())
    );
    let auth = seen[0].header("authorization").unwrap();
    assert!(
        auth.contains(&format!("sr={}", mock::UNRESOLVABLE)),
        "{auth}"
    );
}

#[test]
fn debug_shows_no_key() {
    let dps = ProvisioningServiceClient::from_connection_string(
        &format!(
            "HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={KEY}"
        ),
        ProvisioningServiceClientOptions::default(),
    )
    .unwrap();
    let text = format!("{dps:?}");
    assert!(
        text.contains("provisioningserviceowner") && !text.contains(KEY),
        "{text}"
    );
}

#[test]
fn derived_keys_match_the_documented_recipe() {
    // echo -n dev-1 | openssl dgst -sha256 -mac HMAC -macopt hexkey:<hex of KEY> -binary | base64
    let key = azure_iot_provisioning_service::derive_device_key(KEY, "dev-1").unwrap();
    assert_eq!(key, "CGu1Zghk4iprOdpahhLnKZReG2oJA6GBaFojdp/bsIA=");
}
