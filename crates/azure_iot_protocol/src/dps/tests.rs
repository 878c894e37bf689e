use serde_json::json;

use super::enrollment::*;
use super::registration::*;
use super::*;

#[test]
fn register_bodies_of_every_sdk() {
    // Python: sorted keys, payload null.
    let python =
        RegistrationRequest::from_body(br#"{"payload": null, "registrationId": "dev1"}"#).unwrap();
    assert_eq!(python.registration_id.as_deref(), Some("dev1"));
    assert_eq!(python.payload, None);
    // Node: no payload.
    let node = RegistrationRequest::from_body(br#"{"registrationId":"dev1"}"#).unwrap();
    assert_eq!(node, python);
    // C#: empty body; Node's poll: one space.
    assert_eq!(
        RegistrationRequest::from_body(b"").unwrap(),
        RegistrationRequest::default()
    );
    assert_eq!(
        RegistrationRequest::from_body(b" ").unwrap(),
        RegistrationRequest::default()
    );
    // A custom payload survives.
    let custom = RegistrationRequest::from_body(br#"{"payload":{"a":1}}"#).unwrap();
    assert_eq!(custom.payload, Some(json!({"a": 1})));
    assert!(RegistrationRequest::from_body(b"{").is_err());
}

#[test]
fn operation_status_round_trip() {
    let text = r#"{"operationId":"4.abc","status":"assigned","registrationState":{
        "registrationId":"dev1","assignedHub":"hub.local","deviceId":"dev1","status":"assigned",
        "substatus":"initialAssignment","generationId":"g1",
        "symmetricKey":{"enrollmentGroupId":"grp"}}}"#;
    let status: OperationStatus = serde_json::from_str(text).unwrap();
    assert!(status.status.is_final());
    let state = status.registration_state.as_ref().unwrap();
    assert_eq!(
        state.substatus,
        Some(RegistrationSubstatus::InitialAssignment)
    );
    assert_eq!(
        state
            .symmetric_key
            .as_ref()
            .unwrap()
            .enrollment_group_id
            .as_deref(),
        Some("grp")
    );
    // Unmodelled members survive a round trip.
    let again = serde_json::to_value(&status).unwrap();
    assert_eq!(again["registrationState"]["generationId"], "g1");
    assert!(!RegistrationStatus::Assigning.is_final());
}

#[test]
fn enrollments_parse_what_the_sdks_send_and_reject_unknown_attestations() {
    let node = json!({
        "registrationId": "dev-01",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "a", "secondaryKey": "b"}},
        "provisioningStatus": "enabled",
        "initialTwin": {"properties": {"desired": {"testProp": "x"}}},
        "optionalDeviceInformation": {"k": 1}
    });
    let e: IndividualEnrollment = serde_json::from_value(node).unwrap();
    assert_eq!(e.attestation.kind, AttestationType::SymmetricKey);
    assert_eq!(
        serde_json::to_value(&e).unwrap()["optionalDeviceInformation"]["k"],
        1
    );
    // The shared settings are read into `settings`, and only the rest is kept in `other`.
    assert_eq!(
        serde_json::to_value(&e.settings.initial_twin).unwrap()["properties"]["desired"]["testProp"],
        "x"
    );
    assert_eq!(
        e.other.keys().collect::<Vec<_>>(),
        ["optionalDeviceInformation"]
    );
    let group: EnrollmentGroup = serde_json::from_value(json!({
        "enrollmentGroupId": "g1",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "a", "secondaryKey": "b"}},
        "provisioningStatus": "disabled",
        "etag": "e1",
        "iotHubs": ["h1"]
    }))
    .unwrap();
    assert_eq!(
        group.settings.provisioning_status,
        ProvisioningStatus::Disabled
    );
    assert_eq!(group.settings.etag.as_deref(), Some("e1"));
    assert!(group.other.is_empty(), "{:?}", group.other);
    let again = serde_json::to_value(&group).unwrap();
    assert_eq!(again["provisioningStatus"], "disabled");
    assert_eq!(again["iotHubs"], json!(["h1"]));
    assert!(
        !format!("{e:?}").contains("\"a\""),
        "keys are redacted in Debug"
    );
    let bad = json!({"registrationId": "x", "attestation": {"type": "retina"}});
    assert!(serde_json::from_value::<IndividualEnrollment>(bad).is_err());
}

#[test]
fn bulk_modes_in_both_spellings() {
    for spelling in [
        "updateIfMatchETag",
        "updateIfMatchEtag",
        "UPDATEIFMATCHETAG",
    ] {
        let op: BulkEnrollmentOperation =
            serde_json::from_value(json!({"mode": spelling, "enrollments": []})).unwrap();
        assert_eq!(op.mode, BulkMode::UpdateIfMatchEtag);
    }
    assert_eq!(
        serde_json::to_value(BulkMode::UpdateIfMatchEtag).unwrap(),
        "updateIfMatchETag"
    );
    assert!(serde_json::from_value::<BulkMode>(json!("merge")).is_err());
}

#[test]
fn error_codes_carry_their_status() {
    assert_eq!(ErrorDetails::new(401_002, "x").http_status(), Some(401));
    assert_eq!(ErrorDetails::new(42, "x").http_status(), None);
    assert_eq!(registration_path("0ne1", "dev"), "0ne1/registrations/dev");
}
