//! A device registering with the emulator's DPS over HTTPS, by hand (no provisioning client):
//! `PUT …/register` with a SAS token, then polling the operation until it is final.

use std::time::{Duration, SystemTime};

use azure_iot_core::{ResourceUri, SasToken, SharedAccessKey};
use azure_iot_emulator::EmulatorHandle;
use serde_json::{Value, json};

use crate::HubEndpoint;

/// Registers `registration_id` with the symmetric key `key` (base64; a group's derived key or
/// an individual enrollment's key) and returns the final operation status
/// (`{"operationId", "status", "registrationState": {…}}`).
pub async fn register_over_https(hub: &EmulatorHandle, registration_id: &str, key: &str) -> Value {
    let scope = hub.dps_id_scope();
    let host = hub.dps_hostname();
    let token = SasToken::generate(
        &ResourceUri::dps_registration(scope, registration_id),
        &SharedAccessKey::from_base64(key).unwrap(),
        Some(azure_iot_protocol::dps::DEVICE_KEY_NAME),
        SystemTime::now() + Duration::from_secs(3600),
    );
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(HubEndpoint::of(hub).tls_config())
        .resolve(host, hub.https_addr())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let base = format!(
        "https://{host}:{}/{scope}/registrations/{registration_id}",
        hub.https_addr().port()
    );
    let version = azure_iot_protocol::dps::API_VERSION;
    let send = |request: reqwest::RequestBuilder| async {
        let answer = request
            .header("Authorization", token.secret())
            .send()
            .await
            .unwrap();
        answer.json::<Value>().await.unwrap()
    };
    let answer = send(
        client
            .put(format!("{base}/register?api-version={version}"))
            .json(&json!({ "registrationId": registration_id })),
    )
    .await;
    let Some(operation) = answer["operationId"].as_str() else {
        panic!("register answered {answer}");
    };
    // The emulator decides without waiting on anything slow: a bounded number of polls.
    for _ in 0..100 {
        let status = send(client.get(format!(
            "{base}/operations/{operation}?api-version={version}"
        )))
        .await;
        if status["status"] != "assigning" && status["status"] != "unassigned" {
            return status;
        }
        tokio::task::yield_now().await;
    }
    panic!("the registration of {registration_id} never finished");
}
