//! The emulator's DPS service API, for tests that need enrollments.

use std::time::Duration;

use azure_iot_core::connection_string::ServiceConnectionString;
use azure_iot_core::sas::{ResourceUri, SasToken};
use azure_iot_emulator::{Emulator, EmulatorHandle};
use serde_json::Value;

use crate::{HubEndpoint, http_client};

/// An emulator on ephemeral ports, state in memory, whose DPS answers every registration at
/// once (`retry-after` 0), so registration tests take no waiting.
pub async fn dps_emulator() -> EmulatorHandle {
    Emulator::builder()
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .dps_retry_after(0)
        .start()
        .await
        .expect("emulator starts")
}

/// `PUT {path}` (an enrollment or group) on `hub`'s DPS service API with its
/// `provisioningserviceowner` policy; panics unless DPS answers 2xx.
pub async fn dps_put(hub: &EmulatorHandle, path: &str, body: Value) {
    let cs = ServiceConnectionString::parse(&hub.dps_connection_string()).unwrap();
    let token = SasToken::generate_with_ttl(
        &ResourceUri::custom(cs.host_name()),
        cs.key(),
        Some(cs.key_name()),
        Duration::from_secs(600),
    );
    let response = http_client(&HubEndpoint::of(hub))
        .put(format!(
            "https://localhost:{}{path}?api-version=2021-10-01",
            hub.https_addr().port()
        ))
        .header("Authorization", token.secret())
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert!(
        status.is_success(),
        "PUT {path}: {status} {}",
        response.text().await.unwrap_or_default()
    );
}

/// A symmetric-key enrollment body: for `/enrollments/{id}` with `"registrationId"`, or for
/// `/enrollmentGroups/{id}` with `"enrollmentGroupId"` as `id_field`.
pub fn key_enrollment(id_field: &str, id: &str, key: &str) -> Value {
    serde_json::json!({
        id_field: id,
        "attestation": {"type": "symmetricKey",
                        "symmetricKey": {"primaryKey": key, "secondaryKey": key}},
    })
}
