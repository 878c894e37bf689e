//! TPM attestation with the emulator's DPS over HTTPS, the device side played by a software
//! TPM (swtpm driven with tpm2-tools): the 401 challenge, the SAS token signed inside the TPM,
//! the assigned result's activation blob for the hub key, renewal, and the refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_iot_core::sas::SharedAccessKey;
use azure_iot_emulator::EmulatorHandle;
use azure_iot_protocol::tpm::ActivationBlob;
use azure_iot_test::{HubEndpoint, RestClient, SoftwareTpm, dps_emulator, dps_put};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{read_sasl, write_sasl};

mod support;

/// A device with its TPM, talking to one emulator's DPS by hand.
struct TpmDevice<'a> {
    hub: &'a EmulatorHandle,
    tpm: SoftwareTpm,
    ek: Vec<u8>,
    srk: Vec<u8>,
    registration_id: String,
    client: reqwest::Client,
}

impl<'a> TpmDevice<'a> {
    async fn enrolled(hub: &'a EmulatorHandle, registration_id: &str) -> Self {
        let tpm = SoftwareTpm::start();
        let (ek, srk) = tpm.create_ek_and_srk();
        dps_put(
            hub,
            &format!("/enrollments/{registration_id}"),
            json!({
                "registrationId": registration_id,
                "attestation": {"type": "tpm", "tpm": {"endorsementKey": STANDARD.encode(&ek)}},
            }),
        )
        .await;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(HubEndpoint::of(hub).tls_config())
            .resolve(hub.dps_hostname(), hub.https_addr())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            hub,
            tpm,
            ek,
            srk,
            registration_id: registration_id.to_owned(),
            client,
        }
    }

    fn base(&self) -> String {
        format!(
            "https://{}:{}/{}/registrations/{}",
            self.hub.dps_hostname(),
            self.hub.https_addr().port(),
            self.hub.dps_id_scope(),
            self.registration_id
        )
    }

    fn body(&self) -> Value {
        json!({
            "registrationId": self.registration_id,
            "tpm": {"endorsementKey": STANDARD.encode(&self.ek),
                    "storageRootKey": STANDARD.encode(&self.srk)},
        })
    }

    async fn put(&self, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut request = self
            .client
            .put(format!("{}/register?api-version=2021-10-01", self.base()))
            .json(body);
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        let answer = request.send().await.unwrap();
        let status = answer.status();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    async fn poll(&self, token: &str, operation: &str) -> Value {
        for _ in 0..100 {
            let answer = self
                .client
                .get(format!(
                    "{}/operations/{operation}?api-version=2021-10-01",
                    self.base()
                ))
                .header("Authorization", token)
                .send()
                .await
                .unwrap();
            let body: Value = answer.json().await.unwrap();
            if body["status"] != "assigning" {
                return body;
            }
        }
        panic!("the registration stayed assigning");
    }

    /// The 401 challenge's blob, opened in the TPM.
    async fn challenge_and_activate(&self) -> Value {
        let (status, body) = self.put(None, &self.body()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["keyName"], "registration");
        self.activate(body["authenticationKey"].as_str().unwrap());
        body
    }

    fn activate(&self, blob_base64: &str) {
        let blob = ActivationBlob::parse(&STANDARD.decode(blob_base64).unwrap()).unwrap();
        self.tpm.open_activation_blob(&blob).unwrap();
    }

    /// A SAS token for `resource` signed by the key loaded in the TPM.
    fn tpm_token(&self, resource: &str, key_name: Option<&str>) -> String {
        let se = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let sr = encode(resource);
        let sig = STANDARD.encode(self.tpm.hmac(format!("{sr}\n{se}").as_bytes()));
        let mut token = format!("SharedAccessSignature sr={sr}&sig={}&se={se}", encode(&sig));
        if let Some(name) = key_name {
            token.push_str(&format!("&skn={name}"));
        }
        token
    }

    fn dps_token(&self) -> String {
        self.tpm_token(
            &format!(
                "{}/registrations/{}",
                self.hub.dps_id_scope(),
                self.registration_id
            ),
            Some("registration"),
        )
    }

    /// The whole registration; returns the final status.
    async fn register(&self) -> Value {
        self.challenge_and_activate().await;
        let token = self.dps_token();
        let (status, body) = self.put(Some(&token), &self.body()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        self.poll(&token, body["operationId"].as_str().unwrap())
            .await
    }
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The hub device's primary key, from the service API.
async fn device_key(hub: &EmulatorHandle, device_id: &str) -> Vec<u8> {
    let rest = RestClient::new(&HubEndpoint::of(hub), "iothubowner");
    let reply = rest.get(&format!("/devices/{device_id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let key = reply.body["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();
    STANDARD.decode(key).unwrap()
}

#[tokio::test]
async fn tpm_device_registers_over_https_and_gets_its_hub_key_into_the_tpm() {
    let hub = dps_emulator().await;
    let device = TpmDevice::enrolled(&hub, "tpm-device-1").await;
    let status = device.register().await;
    assert_eq!(status["status"], "assigned", "{status}");
    let state = &status["registrationState"];
    assert_eq!(state["deviceId"], "tpm-device-1");
    // The result carries the hub key for the TPM: import it, and the TPM's HMAC is the hub's.
    device.activate(state["tpm"]["authenticationKey"].as_str().unwrap());
    let hub_key = device_key(&hub, "tpm-device-1").await;
    let message = b"hub/devices/tpm-device-1\n1700000000";
    assert_eq!(
        device.tpm.hmac(message),
        SharedAccessKey::from_bytes(hub_key.clone())
            .unwrap()
            .sign(message)
    );

    // Registering again renews the hub key.
    let again = device.register().await;
    assert_eq!(again["status"], "assigned", "{again}");
    let renewed = device_key(&hub, "tpm-device-1").await;
    assert_ne!(renewed, hub_key);
    hub.shutdown().await;
}

#[tokio::test]
async fn tpm_refusals() {
    let hub = dps_emulator().await;
    let device = TpmDevice::enrolled(&hub, "tpm-device-2").await;

    // A token before any challenge: 401.
    let forged = forged_token(&hub, "tpm-device-2");
    let (status, body) = device.put(Some(&forged), &device.body()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Garbage SRK: 400 naming the storage root key; nothing stored.
    let mut bad = device.body();
    bad["tpm"]["storageRootKey"] = json!(STANDARD.encode([1, 2, 3]));
    let (status, body) = device.put(None, &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("storage root key"), "{body}");

    // An EK that is not the enrollment's: 401, no blob.
    let mut other_ek = device.body();
    other_ek["tpm"]["endorsementKey"] = json!(STANDARD.encode(&device.srk));
    let (status, body) = device.put(None, &other_ek).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.get("authenticationKey").is_none(), "{body}");

    // A token signed with a key the challenge did not give: 401.
    device.challenge_and_activate().await;
    let first_token = device.dps_token();
    let (status, body) = device.put(Some(&forged), &device.body()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // A replayed answer: after a new challenge, the previous key's token no longer works.
    let (status, body) = device.put(None, &device.body()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = device.put(Some(&first_token), &device.body()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    hub.shutdown().await;
}

/// A DPS token for `registration_id` signed with a key no challenge gave.
fn forged_token(hub: &EmulatorHandle, registration_id: &str) -> String {
    let sr = encode(&format!(
        "{}/registrations/{registration_id}",
        hub.dps_id_scope()
    ));
    let se = 4_000_000_000u64;
    let wrong = SharedAccessKey::from_bytes(vec![9; 32]).unwrap();
    let sig = STANDARD.encode(wrong.sign(format!("{sr}\n{se}").as_bytes()));
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={se}&skn=registration",
        encode(&sig)
    )
}

/// The SASL `TPM` exchange on the AMQP port, as the C SDK runs it; the blob is opened in the
/// TPM and the final response carries `token(device)`. Returns the outcome code.
async fn sasl_tpm(
    device: &TpmDevice<'_>,
    token: impl Fn(&TpmDevice<'_>) -> String,
) -> fe2o3_amqp_types::sasl::SaslCode {
    use fe2o3_amqp::frames::sasl::Frame;
    use fe2o3_amqp_types::sasl::{SaslInit, SaslResponse};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let hub = device.hub;
    let mut stream = azure_iot_test::tls_connect(&HubEndpoint::of(hub), hub.amqp_addr())
        .await
        .unwrap();
    stream.write_all(b"AMQP\x03\x01\x00\x00").await.unwrap();
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await.unwrap();
    let Frame::Mechanisms(mechanisms) = read_sasl(&mut stream).await else {
        panic!("no sasl-mechanisms");
    };
    assert!(
        mechanisms
            .sasl_server_mechanisms
            .0
            .iter()
            .any(|m| m.as_str() == "TPM")
    );
    let scope = hub.dps_id_scope();
    let mut initial = vec![0];
    initial.extend_from_slice(format!("{scope}\0{}\0", device.registration_id).as_bytes());
    initial.extend_from_slice(&device.ek);
    write_sasl(
        &mut stream,
        &Frame::Init(SaslInit {
            mechanism: "TPM".into(),
            initial_response: Some(initial.into()),
            hostname: Some(format!("{scope}/registrations/{}", device.registration_id)),
        }),
    )
    .await;
    let respond = |bytes: Vec<u8>| {
        Frame::Response(SaslResponse {
            response: bytes.into(),
        })
    };
    match read_sasl(&mut stream).await {
        Frame::Challenge(c) => assert_eq!(c.challenge.into_vec(), vec![0]),
        Frame::Outcome(o) => return o.code,
        other => panic!("{other:?}"),
    }
    let mut srk = vec![0];
    srk.extend_from_slice(&device.srk);
    write_sasl(&mut stream, &respond(srk)).await;
    let mut text = Vec::new();
    let mut sequence = 0u8;
    loop {
        match read_sasl(&mut stream).await {
            Frame::Challenge(c) => {
                let bytes = c.challenge.into_vec();
                let control = bytes[0];
                assert_eq!(control & 0x80, 0x80);
                assert_eq!(control & 0x03, sequence, "segments in sequence");
                sequence += 1;
                text.extend_from_slice(&bytes[1..]);
                if control & 0x40 == 0 {
                    write_sasl(&mut stream, &respond(vec![0])).await;
                    continue;
                }
                device.activate(std::str::from_utf8(&text).unwrap());
                let mut last = vec![0];
                last.extend_from_slice(token(device).as_bytes());
                write_sasl(&mut stream, &respond(last)).await;
            }
            Frame::Outcome(o) => return o.code,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn tpm_device_authenticates_with_sasl_tpm_over_amqp() {
    use fe2o3_amqp_types::sasl::SaslCode;
    let hub = dps_emulator().await;
    let device = TpmDevice::enrolled(&hub, "tpm-amqp-1").await;
    let code = sasl_tpm(&device, |d| d.dps_token()).await;
    assert!(matches!(code, SaslCode::Ok), "{code:?}");
    // The challenge's key is the registration's: a TPM-signed register is accepted.
    let token = device.dps_token();
    let (status, body) = device.put(Some(&token), &device.body()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // A token not signed by the challenge's key: SASL auth failure.
    let code = sasl_tpm(&device, |d| forged_token(d.hub, "tpm-amqp-1")).await;
    assert!(matches!(code, SaslCode::Auth), "{code:?}");
    hub.shutdown().await;
}
