//! The emulator's Device Provisioning Service over real TLS on the HTTPS port: the service API
//! (enrollments, groups, ETags, bulk, paged queries, registration states), device registration
//! with symmetric keys (individual and group-derived) and X.509 (individual leaf, group signing
//! certificate), the provisioned device at the hub, the refusals, and persistence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use azure_iot_core::connection_string::ServiceConnectionString;
use azure_iot_core::sas::{ResourceUri, SasToken, SharedAccessKey};
use azure_iot_emulator::{Emulator, EmulatorHandle};
use azure_iot_protocol::mqtt::codec::{ConnectReturnCode, Packet, QoS};
use azure_iot_test::{HubEndpoint, MqttClient, RestClient, TestCa, device_token, http_client};
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const HOUR: Duration = Duration::from_secs(3600);

async fn start() -> EmulatorHandle {
    start_with(Emulator::builder()).await
}

/// Starts `builder` on free ports, with DPS's `retry-after` 0.
async fn start_with(builder: azure_iot_emulator::EmulatorBuilder) -> EmulatorHandle {
    builder
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .dps_retry_after(0)
        .start()
        .await
        .expect("emulator starts")
}

/// A decoded answer.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("answered");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "JSON bodies say so"
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// The DPS service API, authorized with the `provisioningserviceowner` connection string.
struct Service {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Service {
    fn new(hub: &EmulatorHandle) -> Self {
        let cs = ServiceConnectionString::parse(&hub.dps_connection_string()).unwrap();
        assert_eq!(cs.host_name(), hub.dps_hostname());
        let token = SasToken::generate_with_ttl(
            &ResourceUri::custom(cs.host_name()),
            cs.key(),
            Some(cs.key_name()),
            HOUR,
        )
        .secret()
        .to_owned();
        Self {
            http: http_client(&HubEndpoint::of(hub)),
            base: format!("https://localhost:{}", hub.https_addr().port()),
            token,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self
            .http
            .request(
                method,
                format!("{}{path}?api-version=2021-10-01", self.base),
            )
            .header("Authorization", &self.token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json; charset=utf-8")
                .body(body.to_string());
        }
        send(request).await
    }
}

fn assert_error(answer: &Answer, status: StatusCode, code: i64) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["errorCode"], json!(code), "{}", answer.body);
    assert_eq!(
        answer.headers["x-ms-error-code"].to_str().unwrap(),
        code.to_string()
    );
    assert!(
        answer.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

fn key_enrollment(id: &str, key: &str) -> Value {
    json!({
        "registrationId": id,
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": key, "secondaryKey": key}},
        "initialTwin": {"tags": {"site": "lab"}, "properties": {"desired": {"interval": 5}}},
    })
}

fn new_key() -> String {
    SharedAccessKey::generate().unwrap().to_base64()
}

/// A device's DPS token for `registration`, signed with `key`.
fn device_sas(scope: &str, registration: &str, key: &str) -> String {
    SasToken::generate_with_ttl(
        &ResourceUri::dps_registration(scope, registration),
        &SharedAccessKey::from_base64(key).unwrap(),
        Some("registration"),
        HOUR,
    )
    .secret()
    .to_owned()
}

/// Registers over HTTPS with `auth` (a SAS token, or none with a client certificate in
/// `http`) and polls once; returns the register answer and the poll answer.
async fn register(
    hub: &EmulatorHandle,
    http: &reqwest::Client,
    registration: &str,
    auth: Option<&str>,
) -> (Answer, Option<Answer>) {
    let base = format!(
        "https://localhost:{}/{}/registrations/{registration}",
        hub.https_addr().port(),
        hub.dps_id_scope()
    );
    let with_auth = |r: reqwest::RequestBuilder| match auth {
        Some(token) => r.header("Authorization", token),
        None => r,
    };
    let first = send(
        with_auth(http.put(format!("{base}/register?api-version=2019-03-31")))
            .header("Content-Type", "application/json; charset=utf-8")
            .body(json!({"registrationId": registration, "payload": null}).to_string()),
    )
    .await;
    if first.status != StatusCode::ACCEPTED {
        return (first, None);
    }
    let operation = first.body["operationId"].as_str().unwrap().to_owned();
    let poll = send(with_auth(http.get(format!(
        "{base}/operations/{operation}?api-version=2019-03-31"
    ))))
    .await;
    (first, Some(poll))
}

/// Registers with a SAS token and returns the final poll body (asserting the 202 first).
async fn register_sas(hub: &EmulatorHandle, registration: &str, key: &str) -> Value {
    let http = http_client(&HubEndpoint::of(hub));
    let token = device_sas(hub.dps_id_scope(), registration, key);
    let (first, poll) = register(hub, &http, registration, Some(&token)).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_eq!(first.body["status"], "assigning");
    assert_eq!(first.headers["retry-after"].to_str().unwrap(), "0");
    let poll = poll.unwrap();
    assert_eq!(poll.status, StatusCode::OK, "{}", poll.body);
    poll.body
}

/// Connects `device` to the hub over MQTT with `key` and sends one telemetry message.
async fn send_telemetry(hub: &EmulatorHandle, device: &str, key: &str) {
    let ep = HubEndpoint::of(hub);
    let token = device_token(&ep, device, None, key, HOUR);
    let (mut client, ack) = MqttClient::connect(&ep, device, &token, true, 60).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    client
        .publish(
            &format!("devices/{device}/messages/events/"),
            "hello",
            QoS::AtLeastOnce,
        )
        .await;
    assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));
    let events = hub.telemetry(0, 100).await.unwrap();
    assert!(events.iter().any(|e| e.device_id == device));
}

#[tokio::test]
async fn service_api_enrollments_etags_bulk_and_paged_queries() {
    let hub = start().await;
    let dps = Service::new(&hub);

    // Create with generated keys; read back; If-Match rules.
    let created = dps
        .call(
            Method::PUT,
            "/enrollments/dev-1",
            Some(json!({"registrationId": "dev-1", "attestation": {"type": "symmetricKey"}})),
            &[],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let etag = created.body["etag"].as_str().unwrap().to_owned();
    let primary = created.body["attestation"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(primary)
            .unwrap()
            .len(),
        32
    );
    assert!(created.body["createdDateTimeUtc"].is_string());
    let got = dps
        .call(Method::GET, "/ENROLLMENTS/Dev-1/", None, &[])
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["etag"], json!(etag));

    let stale = dps
        .call(
            Method::PUT,
            "/enrollments/dev-1",
            Some(key_enrollment("dev-1", &new_key())),
            &[("If-Match", "\"not-it\"")],
        )
        .await;
    assert_error(&stale, StatusCode::PRECONDITION_FAILED, 412002);
    let updated = dps
        .call(
            Method::PUT,
            "/enrollments/dev-1",
            Some(key_enrollment("dev-1", &new_key())),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_ne!(updated.body["etag"], json!(etag));
    assert_eq!(
        updated.body["createdDateTimeUtc"],
        created.body["createdDateTimeUtc"]
    );
    let mechanism = dps
        .call(
            Method::POST,
            "/enrollments/dev-1/attestationmechanism",
            None,
            &[],
        )
        .await;
    assert_eq!(mechanism.body["type"], "symmetricKey");

    // Unknown attestation type, mismatched id, no token.
    let unknown = dps
        .call(
            Method::PUT,
            "/enrollments/dev-2",
            Some(json!({"registrationId": "dev-2", "attestation": {"type": "magic"}})),
            &[],
        )
        .await;
    assert_error(&unknown, StatusCode::BAD_REQUEST, 400004);
    let mismatch = dps
        .call(
            Method::PUT,
            "/enrollments/dev-2",
            Some(key_enrollment("other", "")),
            &[],
        )
        .await;
    assert_error(&mismatch, StatusCode::BAD_REQUEST, 400004);
    let anonymous = send(dps.http.get(format!("{}/enrollments/dev-1", dps.base))).await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, 401002);

    // Delete: stale If-Match, then success, then 404.
    let current = dps.call(Method::GET, "/enrollments/dev-1", None, &[]).await;
    let stale = dps
        .call(
            Method::DELETE,
            "/enrollments/dev-1",
            None,
            &[("If-Match", &etag)],
        )
        .await;
    assert_error(&stale, StatusCode::PRECONDITION_FAILED, 412002);
    let deleted = dps
        .call(
            Method::DELETE,
            "/enrollments/dev-1",
            None,
            &[("If-Match", current.body["etag"].as_str().unwrap())],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = dps
        .call(Method::DELETE, "/enrollments/dev-1", None, &[])
        .await;
    assert_error(&gone, StatusCode::NOT_FOUND, 404201);

    // Bulk: at most 10; a failing item writes nothing.
    let many: Vec<Value> = (0..11)
        .map(|i| key_enrollment(&format!("b{i}"), ""))
        .collect();
    let too_many = dps
        .call(
            Method::POST,
            "/enrollments/",
            Some(json!({"mode": "create", "enrollments": many})),
            &[],
        )
        .await;
    assert_error(&too_many, StatusCode::BAD_REQUEST, 400004);
    let five: Vec<Value> = (0..5)
        .map(|i| key_enrollment(&format!("b{i}"), ""))
        .collect();
    let bulk = dps
        .call(
            Method::POST,
            "/enrollments",
            Some(json!({"mode": "create", "enrollments": five})),
            &[],
        )
        .await;
    assert_eq!(bulk.body, json!({"isSuccessful": true, "errors": []}));
    let again = dps
        .call(
            Method::POST,
            "/enrollments",
            Some(json!({"mode": "create", "enrollments": [key_enrollment("b0", ""), key_enrollment("b9", "")]})),
            &[],
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["isSuccessful"], false);
    assert_eq!(again.body["errors"][0]["registrationId"], "b0");
    assert_eq!(again.body["errors"][0]["errorCode"], 409201);
    let b9 = dps.call(Method::GET, "/enrollments/b9", None, &[]).await;
    assert_eq!(
        b9.status,
        StatusCode::NOT_FOUND,
        "nothing of a failed bulk is written"
    );

    // Query with paging: 5 items, pages of 2.
    let mut seen = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let mut headers = vec![("x-ms-max-item-count", "2")];
        if let Some(c) = continuation.as_deref() {
            headers.push(("x-ms-continuation", c));
        }
        let page = dps
            .call(
                Method::POST,
                "/enrollments/query",
                Some(json!({"query": "*"})),
                &headers,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(page.headers["x-ms-item-type"], "Enrollment");
        for item in page.body.as_array().unwrap() {
            seen.push(item["registrationId"].as_str().unwrap().to_owned());
        }
        continuation = page
            .headers
            .get("x-ms-continuation")
            .map(|v| v.to_str().unwrap().to_owned());
        if continuation.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["b0", "b1", "b2", "b3", "b4"]);
    let filtered = dps
        .call(
            Method::POST,
            "/enrollments/query",
            Some(json!({"query": "SELECT * FROM enrollments WHERE registrationId = 'b3'"})),
            &[],
        )
        .await;
    assert_eq!(filtered.body.as_array().unwrap().len(), 1);
    let bad = dps
        .call(
            Method::POST,
            "/enrollments/query",
            Some(json!({"query": "DROP it"})),
            &[],
        )
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, 400004);

    // Groups: Node's lower-case path for the attestation mechanism; delete missing → 404.
    let group = dps
        .call(
            Method::PUT,
            "/enrollmentGroups/g1",
            Some(json!({"enrollmentGroupId": "g1", "attestation": {"type": "symmetricKey"}})),
            &[],
        )
        .await;
    assert_eq!(group.status, StatusCode::OK, "{}", group.body);
    let mechanism = dps
        .call(
            Method::POST,
            "/enrollmentgroups/g1/attestationmechanism",
            None,
            &[],
        )
        .await;
    assert!(mechanism.body["symmetricKey"]["primaryKey"].is_string());
    let groups = dps
        .call(
            Method::POST,
            "/enrollmentGroups/query",
            Some(json!({"query": "SELECT * FROM enrollmentGroups"})),
            &[],
        )
        .await;
    assert_eq!(groups.headers["x-ms-item-type"], "EnrollmentGroup");
    assert_eq!(groups.body.as_array().unwrap().len(), 1);
    let missing = dps
        .call(Method::DELETE, "/enrollmentGroups/nope", None, &[])
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, 404203);
    hub.shutdown().await;
}

#[tokio::test]
async fn symmetric_keys_individual_and_group_register_and_the_device_sends_telemetry() {
    let hub = start().await;
    let dps = Service::new(&hub);
    let owner = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");

    // Individual enrollment with an initial twin and a device id of its own.
    let key = new_key();
    let mut enrollment = key_enrollment("sensor-1", &key);
    enrollment["deviceId"] = json!("sensor-one");
    enrollment["capabilities"] = json!({"iotEdge": true});
    assert_eq!(
        dps.call(Method::PUT, "/enrollments/sensor-1", Some(enrollment), &[])
            .await
            .status,
        StatusCode::OK
    );
    let done = register_sas(&hub, "sensor-1", &key).await;
    assert_eq!(done["status"], "assigned", "{done}");
    let state = &done["registrationState"];
    assert_eq!(state["assignedHub"], json!(hub.hostname()));
    assert_eq!(state["deviceId"], "sensor-one");
    assert_eq!(state["substatus"], "initialAssignment");
    assert!(state["etag"].is_string() && state["createdDateTimeUtc"].is_string());
    let twin = owner.get("/twins/sensor-one").await;
    assert_eq!(twin.body["tags"]["site"], "lab");
    assert_eq!(twin.body["properties"]["desired"]["interval"], 5);
    assert_eq!(twin.body["capabilities"]["iotEdge"], true);
    send_telemetry(&hub, "sensor-one", &key).await;

    // The service API sees the registration with the enrollment.
    let read = dps
        .call(Method::GET, "/enrollments/sensor-1", None, &[])
        .await;
    assert_eq!(read.body["registrationState"]["deviceId"], "sensor-one");
    let record = dps
        .call(Method::GET, "/registrations/sensor-1", None, &[])
        .await;
    assert_eq!(record.body["status"], "assigned");

    // Re-registration with the default policy keeps the twin (migrated); a reset policy
    // restores the initial twin.
    owner
        .request(
            Method::PATCH,
            "/twins/sensor-one",
            Some(json!({"tags": {"site": "moved"}})),
            &[("If-Match", "*")],
        )
        .await;
    let again = register_sas(&hub, "sensor-1", &key).await;
    assert_eq!(
        again["registrationState"]["substatus"],
        "deviceDataMigrated"
    );
    assert_eq!(
        owner.get("/twins/sensor-one").await.body["tags"]["site"],
        "moved"
    );
    let mut reset = key_enrollment("sensor-1", &key);
    reset["deviceId"] = json!("sensor-one");
    reset["reprovisionPolicy"] = json!({"updateHubAssignment": true, "migrateDeviceData": false});
    dps.call(Method::PUT, "/enrollments/sensor-1", Some(reset), &[])
        .await;
    let again = register_sas(&hub, "sensor-1", &key).await;
    assert_eq!(again["registrationState"]["substatus"], "deviceDataReset");
    assert_eq!(
        owner.get("/twins/sensor-one").await.body["tags"]["site"],
        "lab"
    );

    // Group: the device derives its key from the group key.
    let group_key = new_key();
    let group = dps
        .call(
            Method::PUT,
            "/enrollmentGroups/fleet",
            Some(json!({
                "enrollmentGroupId": "fleet",
                "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": group_key, "secondaryKey": new_key()}},
            })),
            &[],
        )
        .await;
    assert_eq!(group.status, StatusCode::OK, "{}", group.body);
    let derived = SharedAccessKey::from_base64(&group_key)
        .unwrap()
        .derive_for_registration("fleet-7")
        .to_base64();
    let done = register_sas(&hub, "fleet-7", &derived).await;
    assert_eq!(done["status"], "assigned", "{done}");
    assert_eq!(done["registrationState"]["deviceId"], "fleet-7");
    assert_eq!(
        done["registrationState"]["symmetricKey"]["enrollmentGroupId"],
        "fleet"
    );
    send_telemetry(&hub, "fleet-7", &derived).await;
    let members = dps
        .call(
            Method::POST,
            "/registrations/fleet/query",
            Some(json!({"query": "*"})),
            &[],
        )
        .await;
    assert_eq!(members.headers["x-ms-item-type"], "DeviceRegistration");
    assert_eq!(members.body.as_array().unwrap().len(), 1);
    assert_eq!(members.body[0]["registrationId"], "fleet-7");
    let etag = members.body[0]["etag"].as_str().unwrap().to_owned();
    let deleted = dps
        .call(
            Method::DELETE,
            "/registrations/fleet-7",
            None,
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = dps
        .call(Method::GET, "/registrations/fleet-7", None, &[])
        .await;
    assert_error(&gone, StatusCode::NOT_FOUND, 404202);
    hub.shutdown().await;
}

#[tokio::test]
async fn bad_registrations_are_refused_and_nothing_is_half_assigned() {
    let hub = start().await;
    let dps = Service::new(&hub);
    let owner = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let http = http_client(&HubEndpoint::of(&hub));
    let scope = hub.dps_id_scope().to_owned();
    let key = new_key();
    dps.call(
        Method::PUT,
        "/enrollments/good",
        Some(key_enrollment("good", &key)),
        &[],
    )
    .await;
    let group_key = new_key();
    dps.call(
        Method::PUT,
        "/enrollmentGroups/grp",
        Some(json!({"enrollmentGroupId": "grp", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": group_key, "secondaryKey": group_key}}})),
        &[],
    )
    .await;

    // Unknown scope: 404.
    let base = format!("https://localhost:{}", hub.https_addr().port());
    let unknown_scope = send(
        http.put(format!("{base}/0ne99999999/registrations/good/register"))
            .header("Authorization", device_sas("0ne99999999", "good", &key))
            .body("{}"),
    )
    .await;
    assert_error(&unknown_scope, StatusCode::NOT_FOUND, 404001);

    let refused = |registration: &'static str, token: String| {
        let http = http.clone();
        let url = format!("{base}/{scope}/registrations/{registration}/register");
        async move { send(http.put(url).header("Authorization", token).body("{}")).await }
    };
    // Unknown registration (no group accepts it), wrong key, a key derived from a group key
    // that is not enrolled, a token for another registration, an expired token, skn other
    // than `registration`.
    let other_group = SharedAccessKey::from_base64(&new_key())
        .unwrap()
        .derive_for_registration("stranger")
        .to_base64();
    let expired = SasToken::generate(
        &ResourceUri::dps_registration(&scope, "good"),
        &SharedAccessKey::from_base64(&key).unwrap(),
        Some("registration"),
        std::time::UNIX_EPOCH + Duration::from_secs(1_000),
    )
    .secret()
    .to_owned();
    let wrong_skn = SasToken::generate_with_ttl(
        &ResourceUri::dps_registration(&scope, "good"),
        &SharedAccessKey::from_base64(&key).unwrap(),
        Some("provisioningserviceowner"),
        HOUR,
    )
    .secret()
    .to_owned();
    for (registration, token) in [
        ("nobody", device_sas(&scope, "nobody", &new_key())),
        ("good", device_sas(&scope, "good", &new_key())),
        ("stranger", device_sas(&scope, "stranger", &other_group)),
        ("good", device_sas(&scope, "other", &key)),
        ("good", expired),
        ("good", wrong_skn),
    ] {
        let answer = refused(registration, token).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, 401002);
    }
    // An individual enrollment wins: the group's derived key does not open it.
    let derived = SharedAccessKey::from_base64(&group_key)
        .unwrap()
        .derive_for_registration("good")
        .to_base64();
    assert_error(
        &refused("good", device_sas(&scope, "good", &derived)).await,
        StatusCode::UNAUTHORIZED,
        401002,
    );
    // Polling an operation that is not the registration's: 404.
    assert_eq!(register_sas(&hub, "good", &key).await["status"], "assigned");
    let poll = send(
        http.get(format!(
            "{base}/{scope}/registrations/good/operations/4.nope"
        ))
        .header("Authorization", device_sas(&scope, "good", &key)),
    )
    .await;
    assert_error(&poll, StatusCode::NOT_FOUND, 404204);

    // A disabled enrollment: the registration ends `disabled`, no hub identity.
    let mut disabled = key_enrollment("off", &key);
    disabled["provisioningStatus"] = json!("disabled");
    dps.call(Method::PUT, "/enrollments/off", Some(disabled), &[])
        .await;
    let done = register_sas(&hub, "off", &key).await;
    assert_eq!(done["status"], "disabled", "{done}");
    assert_eq!(
        owner.get("/devices/off").await.status,
        StatusCode::NOT_FOUND
    );

    // A hub list that names no linked hub, and a custom allocation the emulator cannot run:
    // `failed` with a code, no hub identity.
    let mut elsewhere = key_enrollment("elsewhere", &key);
    elsewhere["iotHubs"] = json!(["other-hub.azure-devices.net"]);
    dps.call(Method::PUT, "/enrollments/elsewhere", Some(elsewhere), &[])
        .await;
    let done = register_sas(&hub, "elsewhere", &key).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["registrationState"]["errorCode"], 400208);
    assert_eq!(
        owner.get("/devices/elsewhere").await.status,
        StatusCode::NOT_FOUND
    );
    let mut custom = key_enrollment("custom", &key);
    custom["allocationPolicy"] = json!("custom");
    custom["customAllocationDefinition"] =
        json!({"webhookUrl": "https://127.0.0.1:1/alloc", "apiVersion": "2021-10-01"});
    dps.call(Method::PUT, "/enrollments/custom", Some(custom), &[])
        .await;
    let done = register_sas(&hub, "custom", &key).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["registrationState"]["errorCode"], 400207);
    assert_eq!(
        owner.get("/devices/custom").await.status,
        StatusCode::NOT_FOUND
    );
    hub.shutdown().await;
}

fn client_with_certificate(
    hub: &EmulatorHandle,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> reqwest::Client {
    let ep = HubEndpoint::of(hub);
    reqwest::Client::builder()
        .use_preconfigured_tls(ep.tls_config_with_certificate(chain, key))
        .resolve("localhost", ep.https_addr)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn x509_individual_and_group_register_and_the_device_connects() {
    let hub = start().await;
    let dps = Service::new(&hub);
    let ep = HubEndpoint::of(&hub);

    // Individual: the enrollment holds the device's own (self-signed) certificate as PEM.
    let (leaf, key, thumbprint) = azure_iot_test::self_signed_device_certificate("cam-1");
    let pem = pem_of(&leaf);
    let created = dps
        .call(
            Method::PUT,
            "/enrollments/cam-1",
            Some(json!({"registrationId": "cam-1", "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}}})),
            &[],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(
        created.body["attestation"]["x509"]["clientCertificates"]["primary"]["info"]["sha1Thumbprint"],
        json!(thumbprint)
    );
    let http = client_with_certificate(&hub, vec![leaf.clone()], key.clone_key());
    let (first, poll) = register(&hub, &http, "cam-1", None).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let poll = poll.unwrap();
    assert_eq!(poll.body["status"], "assigned", "{}", poll.body);
    assert_eq!(
        poll.body["registrationState"]["x509"]["certificateInfo"]["sha1Thumbprint"],
        json!(thumbprint)
    );
    let client = MqttClient::open_with_certificate(&ep, vec![leaf], key).await;
    let (_client, ack) = client.connect_x509(&ep, "cam-1").await;
    assert_eq!(ack.code, ConnectReturnCode::Success);

    // Group: a signing CA given as base64 of its PEM (as the Node samples do).
    let ca = TestCa::new("Fleet CA");
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(ca.cert.pem());
    let group = dps
        .call(
            Method::PUT,
            "/enrollmentGroups/cams",
            Some(json!({"enrollmentGroupId": "cams", "attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": ca_b64}}}}})),
            &[],
        )
        .await;
    assert_eq!(group.status, StatusCode::OK, "{}", group.body);
    let valid_until = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let (leaf, key) = ca.issue("cam-2", valid_until);
    let http = client_with_certificate(&hub, vec![leaf.clone()], key.clone_key());
    let (_, poll) = register(&hub, &http, "cam-2", None).await;
    let poll = poll.unwrap();
    assert_eq!(poll.body["status"], "assigned", "{}", poll.body);
    assert_eq!(
        poll.body["registrationState"]["x509"]["enrollmentGroupId"],
        "cams"
    );
    let client = MqttClient::open_with_certificate(&ep, vec![leaf], key).await;
    let (_client, ack) = client.connect_x509(&ep, "cam-2").await;
    assert_eq!(ack.code, ConnectReturnCode::Success);

    // Refused: a foreign chain, an expired certificate, a CN that is not the registration id.
    let foreign = TestCa::new("Other CA");
    let expired_at = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    for (registration, (leaf, key)) in [
        ("cam-3", foreign.issue("cam-3", valid_until)),
        ("cam-4", ca.issue("cam-4", expired_at)),
        ("cam-5", ca.issue("cam-6", valid_until)),
    ] {
        let http = client_with_certificate(&hub, vec![leaf], key);
        let (first, _) = register(&hub, &http, registration, None).await;
        assert_error(&first, StatusCode::UNAUTHORIZED, 401002);
    }
    let owner = RestClient::new(&ep, "iothubowner");
    assert_eq!(
        owner.get("/devices/cam-3").await.status,
        StatusCode::NOT_FOUND
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn x509_groups_with_ca_references_trust_the_cas_registered_with_the_dps() {
    let hub = start().await;
    let dps = Service::new(&hub);
    let root = TestCa::new("Registered Root");
    let intermediate = root.intermediate("Fleet Intermediate");

    // The CA registry: emulator-only, DPS policy, the hub's description shape.
    let registered = dps
        .call(
            Method::PUT,
            "/$emulator/dps/certificates/fleet-root",
            Some(json!({"properties": {"certificate": root.cert.pem()}})),
            &[],
        )
        .await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.body);
    assert_eq!(registered.body["name"], "fleet-root");
    assert_eq!(registered.body["properties"]["isVerified"], true);
    let listed = dps
        .call(Method::GET, "/$emulator/dps/certificates", None, &[])
        .await;
    assert_eq!(listed.body["value"].as_array().unwrap().len(), 1);
    let hub_token = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    assert_ne!(
        hub_token.get("/$emulator/dps/certificates").await.status,
        StatusCode::OK,
        "the hub's policy does not open the DPS registry"
    );
    // The hub's own CA registry is untouched.
    assert_eq!(
        hub_token.get("/certificates").await.body["value"],
        json!([])
    );

    // A reference to a CA nobody registered is refused at write time, with DPS's body.
    let unknown = dps
        .call(
            Method::PUT,
            "/enrollmentGroups/ghosts",
            Some(json!({"enrollmentGroupId": "ghosts", "attestation": {"type": "x509", "x509": {"caReferences": {"primary": "no-such-ca"}}}})),
            &[],
        )
        .await;
    assert_error(&unknown, StatusCode::BAD_REQUEST, 400004);

    let group = dps
        .call(
            Method::PUT,
            "/enrollmentGroups/fleet",
            Some(json!({"enrollmentGroupId": "fleet", "attestation": {"type": "x509", "x509": {"caReferences": {"primary": "fleet-root"}}}})),
            &[],
        )
        .await;
    assert_eq!(group.status, StatusCode::OK, "{}", group.body);

    // A leaf signed by an intermediate signed by the registered root: the device presents
    // leaf and intermediate.
    let valid_until = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let (leaf, key) = intermediate.issue("fleet-1", valid_until);
    let chain = vec![leaf, intermediate.cert.der().clone()];
    let http = client_with_certificate(&hub, chain.clone(), key.clone_key());
    let (first, poll) = register(&hub, &http, "fleet-1", None).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let poll = poll.unwrap();
    assert_eq!(poll.body["status"], "assigned", "{}", poll.body);
    assert_eq!(
        poll.body["registrationState"]["x509"]["enrollmentGroupId"],
        "fleet"
    );

    // A device of another CA is refused with DPS's 401.
    let other = TestCa::new("Other Root").intermediate("Other Intermediate");
    let (foreign, foreign_key) = other.issue("fleet-2", valid_until);
    let http_foreign =
        client_with_certificate(&hub, vec![foreign, other.cert.der().clone()], foreign_key);
    let (refused, _) = register(&hub, &http_foreign, "fleet-2", None).await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, 401002);

    // Deleting the CA: the next registration of the trusted device fails.
    let deleted = dps
        .call(
            Method::DELETE,
            "/$emulator/dps/certificates/fleet-root",
            None,
            &[],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = dps
        .call(
            Method::GET,
            "/$emulator/dps/certificates/fleet-root",
            None,
            &[],
        )
        .await;
    assert_error(&gone, StatusCode::NOT_FOUND, 404000);
    let http = client_with_certificate(&hub, chain, key);
    let (again, _) = register(&hub, &http, "fleet-1", None).await;
    assert_error(&again, StatusCode::UNAUTHORIZED, 401002);
    hub.shutdown().await;
}

#[tokio::test]
async fn dps_ca_certificates_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = TestCa::new("Persistent Root");
    let hub = start_with(Emulator::builder().blob_port(0).data_dir(dir.path())).await;
    let put = Service::new(&hub)
        .call(
            Method::PUT,
            "/$emulator/dps/certificates/Kept-Root",
            Some(json!({"certificate": root.cert.pem()})),
            &[],
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    hub.shutdown().await;
    let hub = start_with(Emulator::builder().blob_port(0).data_dir(dir.path())).await;
    let got = Service::new(&hub)
        .call(
            Method::GET,
            "/$emulator/dps/certificates/kept-root",
            None,
            &[],
        )
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.body["name"], "Kept-Root");
    hub.shutdown().await;
}

fn pem_of(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn dps_state_and_identity_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        Emulator::builder()
            .https_port(0)
            .mqtt_port(0)
            .amqp_port(0)
            .blob_port(0)
            .dps_retry_after(0)
            .data_dir(dir.path())
            .start()
    };
    let hub = open().await.unwrap();
    let scope = hub.dps_id_scope().to_owned();
    let dps_cs = hub.dps_connection_string();
    let key = new_key();
    let dps = Service::new(&hub);
    let created = dps
        .call(
            Method::PUT,
            "/enrollments/keep",
            Some(key_enrollment("keep", &key)),
            &[],
        )
        .await;
    let done = register_sas(&hub, "keep", &key).await;
    assert_eq!(done["status"], "assigned");
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("hub.json")).unwrap())
            .unwrap();
    assert_eq!(file["dps"]["id_scope"], json!(scope));
    assert_eq!(file["dps"]["connection_string"], json!(dps_cs));
    hub.shutdown().await;

    let hub = open().await.unwrap();
    assert_eq!(hub.dps_id_scope(), scope);
    assert_eq!(hub.dps_connection_string(), dps_cs);
    let dps = Service::new(&hub);
    let read = dps.call(Method::GET, "/enrollments/keep", None, &[]).await;
    assert_eq!(read.body["etag"], created.body["etag"]);
    assert_eq!(read.body["registrationState"]["status"], "assigned");
    send_telemetry(&hub, "keep", &key).await;
    hub.shutdown().await;
}

/// A one-connection-at-a-time HTTP webhook on 127.0.0.1: answers every POST with `answer`
/// (`None`: never answers) and sends each request body it got to the returned receiver.
async fn webhook(answer: Option<&'static str>) -> (String, tokio::sync::mpsc::Receiver<Value>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/allocate?code=secret",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buffer.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buffer).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buffer.len() >= end + 4 + length {
                        break Some(buffer[end + 4..end + 4 + length].to_vec());
                    }
                }
            };
            let Some(body) = body else { continue };
            let _ = tx.send(serde_json::from_slice(&body).unwrap()).await;
            match answer {
                Some(answer) => {
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                }
                // Hold the connection open without answering until the client gives up.
                None => {
                    let _ = stream.read(&mut chunk).await;
                }
            }
        }
    });
    (url, rx)
}

#[tokio::test]
async fn a_custom_allocation_webhook_chooses_device_twin_and_payload() {
    let hub = Emulator::builder()
        .https_port(0)
        .mqtt_port(0)
        .amqp_port(0)
        .dps_retry_after(0)
        .dps_webhook_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let dps = Service::new(&hub);
    let owner = RestClient::new(&HubEndpoint::of(&hub), "iothubowner");
    let answer: &'static str = Box::leak(
        json!({
            "iotHubHostName": hub.hostname(),
            "deviceId": "chosen-one",
            "initialTwin": {"tags": {"by": "hook"}, "properties": {"desired": {"mode": "eco"}}},
            "payload": {"hello": "device"},
        })
        .to_string()
        .into_boxed_str(),
    );
    let (good, mut requests) = webhook(Some(answer)).await;
    let (garbage, _garbage_requests) = webhook(Some("{not json")).await;
    let (silent, _silent_requests) = webhook(None).await;
    let (foreign, _foreign_requests) =
        webhook(Some(r#"{"iotHubHostName": "elsewhere.azure-devices.net"}"#)).await;
    let key = new_key();
    for (id, url) in [
        ("hooked", &good),
        ("garbled", &garbage),
        ("slow", &silent),
        ("foreign", &foreign),
    ] {
        let mut enrollment = key_enrollment(id, &key);
        enrollment["allocationPolicy"] = json!("custom");
        enrollment["customAllocationDefinition"] =
            json!({"webhookUrl": url, "apiVersion": "2021-10-01"});
        let put = dps
            .call(
                Method::PUT,
                &format!("/enrollments/{id}"),
                Some(enrollment),
                &[],
            )
            .await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    }

    // The device's payload reaches the webhook; its answer decides the identity and payload.
    let http = http_client(&HubEndpoint::of(&hub));
    let base = format!(
        "https://localhost:{}/{}/registrations/hooked",
        hub.https_addr().port(),
        hub.dps_id_scope()
    );
    let token = device_sas(hub.dps_id_scope(), "hooked", &key);
    let first = send(
        http.put(format!("{base}/register"))
            .header("Authorization", &token)
            .body(json!({"registrationId": "hooked", "payload": {"model": "m1"}}).to_string()),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let operation = first.body["operationId"].as_str().unwrap();
    let poll = send(
        http.get(format!("{base}/operations/{operation}"))
            .header("Authorization", &token),
    )
    .await;
    assert_eq!(poll.body["status"], "assigned", "{}", poll.body);
    assert_eq!(poll.body["registrationState"]["deviceId"], "chosen-one");
    assert_eq!(
        poll.body["registrationState"]["payload"],
        json!({"hello": "device"})
    );
    let sent = requests.recv().await.unwrap();
    assert_eq!(sent["deviceRuntimeContext"]["registrationId"], "hooked");
    assert_eq!(
        sent["deviceRuntimeContext"]["payload"],
        json!({"model": "m1"})
    );
    assert_eq!(sent["linkedHubs"], json!([hub.hostname()]));
    assert!(
        sent["individualEnrollment"]["attestation"]["symmetricKey"].is_null(),
        "keys never go to the webhook"
    );
    let twin = owner.get("/twins/chosen-one").await;
    assert_eq!(twin.body["tags"]["by"], "hook");
    assert_eq!(twin.body["properties"]["desired"]["mode"], "eco");

    // Garbage, silence and a hub that is not linked: failed with 400207, nothing at the hub.
    for id in ["garbled", "slow", "foreign"] {
        let done = register_sas(&hub, id, &key).await;
        assert_eq!(done["status"], "failed", "{done}");
        assert_eq!(done["registrationState"]["errorCode"], 400207, "{done}");
        assert_eq!(
            owner.get(&format!("/devices/{id}")).await.status,
            StatusCode::NOT_FOUND
        );
    }
    hub.shutdown().await;
}

/// A GET of `path` with `host` in the URL (reaching the emulator whatever the name), no
/// credentials: the refusal's body tells which service answered (DPS's errors carry a numeric
/// `errorCode`, the hub's a `Message` with its `ErrorCode`).
async fn unauthorized_get(hub: &EmulatorHandle, host: &str, path: &str) -> Answer {
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(HubEndpoint::of(hub).tls_config())
        .resolve(host, hub.https_addr())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    send(http.get(format!(
        "https://{host}:{}{path}?api-version=2021-10-01",
        hub.https_addr().port()
    )))
    .await
}

fn answered_by_dps(answer: &Answer) -> bool {
    answer.body["errorCode"].is_i64()
}

#[tokio::test]
async fn dps_shares_the_hub_host_name_by_default_and_the_path_decides() {
    let hub = start().await;
    assert_eq!(hub.dps_hostname(), hub.hostname());
    let cs = ServiceConnectionString::parse(&hub.dps_connection_string()).unwrap();
    assert_eq!(cs.host_name(), hub.hostname());
    for path in [
        "/enrollments/e1",
        "/enrollmentGroups/g1",
        "/registrations/r1",
    ] {
        let answer = unauthorized_get(&hub, "localhost", path).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(answered_by_dps(&answer), "{path}: {}", answer.body);
    }
    for path in ["/devices/d1", "/twins/d1", "/statistics/service"] {
        let answer = unauthorized_get(&hub, "localhost", path).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(!answered_by_dps(&answer), "{path}: {}", answer.body);
    }
    // The service API and a device registration work under the shared name.
    let dps = Service::new(&hub);
    let key = new_key();
    let created = dps
        .call(
            Method::PUT,
            "/enrollments/shared1",
            Some(key_enrollment("shared1", &key)),
            &[],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let state = register_sas(&hub, "shared1", &key).await;
    assert_eq!(state["status"], "assigned", "{state}");
    assert_eq!(state["registrationState"]["assignedHub"], hub.hostname());
}

#[tokio::test]
async fn a_dps_host_name_of_its_own_takes_every_request_to_it() {
    let hub = start_with(Emulator::builder().dps_hostname("dps.example")).await;
    assert_eq!(hub.dps_hostname(), "dps.example");
    // The certificate covers the DPS name (the TLS handshake succeeds), and a hub path under
    // it is DPS's; under the hub's name the path decides as before.
    let answer = unauthorized_get(&hub, "dps.example", "/devices/d1").await;
    assert!(answered_by_dps(&answer), "{}", answer.body);
    let answer = unauthorized_get(&hub, "localhost", "/devices/d1").await;
    assert!(!answered_by_dps(&answer), "{}", answer.body);
    let answer = unauthorized_get(&hub, "localhost", "/enrollments/e1").await;
    assert!(answered_by_dps(&answer), "{}", answer.body);
}
