//! `azure-iot quickstart`: the whole system in one command.
//!
//! Starts an emulator in memory on free ports (nothing is written to disk), provisions a
//! device through the emulator's Device Provisioning Service (a symmetric-key enrollment group
//! created with the provisioning service client, the device key derived from the group key,
//! registration over MQTT with the provisioning device client), connects this project's device
//! client to the assigned hub over MQTT with TLS, and walks through telemetry, a direct method, a desired-property patch answered with a
//! reported one, and a cloud-to-device message with its delivery feedback; then a second
//! device over AMQP sends a batch and rejects a cloud-to-device message. Every step is
//! checked, timed and printed; the first failure ends the run with a non-zero exit.

use std::future::Future;
use std::time::{Duration, Instant};

use azure_iot_device::{ClientOptions, DeviceClient, Message, MethodResponse, Transport};
use azure_iot_emulator::{Emulator, EmulatorHandle};
use azure_iot_provisioning_device::{
    Attestation as DeviceAttestation, ProvisioningDeviceClient, RegistrationResult,
};
use azure_iot_provisioning_service::{
    Attestation, EnrollmentGroup, ProvisioningServiceClient, ProvisioningServiceClientOptions,
    derive_device_key,
};
use azure_iot_service::{
    CloudToDeviceMessage, Device, DirectMethodRequest, FeedbackMode, FeedbackStatus, IfMatch,
    ServiceClient, ServiceClientOptions, TwinPatch,
};
use serde_json::json;

use crate::print_line;

/// How long any one step may take.
const STEP_LIMIT: Duration = Duration::from_secs(15);
/// The device's registration id, which DPS also makes its device id.
const DEVICE: &str = "quickstart-device";
/// The enrollment group the device provisions through.
const GROUP: &str = "quickstart-group";

struct Transcript {
    started: Instant,
    steps: u32,
}

impl Transcript {
    /// Runs one step and prints `✓ what (detail) in N ms`, or fails with its error.
    async fn step<T>(
        &mut self,
        what: &str,
        work: impl Future<Output = Result<(T, String), String>>,
    ) -> Result<T, String> {
        let began = Instant::now();
        let (value, detail) = tokio::time::timeout(STEP_LIMIT, work)
            .await
            .map_err(|_| format!("{what}: no result within {} s", STEP_LIMIT.as_secs()))?
            .map_err(|e| format!("{what}: {e}"))?;
        self.steps += 1;
        print_line(&format!(
            "  ✓ {what:<44} {:>7.1} ms   {detail}",
            began.elapsed().as_secs_f64() * 1000.0
        ))?;
        Ok(value)
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub(crate) async fn run() -> Result<(), String> {
    let mut t = Transcript {
        started: Instant::now(),
        steps: 0,
    };
    print_line("azure-iot quickstart: a local IoT Hub, a device and a back end, end to end\n")?;

    let hub = t
        .step("start the IoT Hub emulator (in memory)", async {
            let hub = Emulator::builder()
                .in_memory(true)
                .https_port(0)
                .mqtt_port(0)
                .amqp_port(0)
                .start()
                .await
                .map_err(err)?;
            let detail = format!(
                "https {} · mqtt {} · amqp {}",
                hub.https_addr(),
                hub.mqtt_addr(),
                hub.amqp_addr()
            );
            Ok((hub, detail))
        })
        .await?;
    let result = walk_through(&mut t, &hub).await;
    hub.shutdown().await;
    result?;
    print_line(&format!(
        "\nall {} steps passed in {:.2} s. Next: `azure-iot hub start`, then point the official \
         SDKs or this project's clients at it (see README).",
        t.steps,
        t.started.elapsed().as_secs_f64()
    ))
}

async fn walk_through(t: &mut Transcript, hub: &EmulatorHandle) -> Result<(), String> {
    let owner = hub
        .connection_string("iothubowner")
        .ok_or("the emulator has no iothubowner policy")?;
    let service = ServiceClient::from_connection_string(
        owner,
        ServiceClientOptions::default()
            .trusted_ca_pem(hub.ca_pem())
            .https_port(hub.https_addr().port())
            .amqp_port(hub.amqp_addr().port()),
    )
    .map_err(err)?;

    let registration = provision(t, hub).await?;

    let device = t
        .step("connect to the assigned hub (MQTT over TLS)", async {
            let client = registration
                .device_client(
                    ClientOptions::default()
                        .trusted_ca_pem(hub.ca_pem())
                        .port(hub.mqtt_addr().port())
                        .https_port(hub.https_addr().port()),
                )
                .await
                .map_err(err)?;
            let state = format!("{:?}", client.connection_state());
            Ok((client, state))
        })
        .await?;

    t.step("send 3 telemetry messages, each acknowledged", async {
        for n in 1..=3 {
            let message = Message::builder(json!({"temperature": 20 + n}).to_string())
                .content_type("application/json")
                .content_encoding("utf-8")
                .property("source", "quickstart")
                .build()
                .map_err(err)?;
            device.send_event(message).await.map_err(err)?;
        }
        let logged = hub.telemetry(0, 100).await.map_err(err)?;
        let ours = logged.iter().filter(|e| e.device_id == DEVICE).count();
        if ours != 3 {
            return Err(format!("the hub logged {ours} messages, not 3"));
        }
        Ok(((), "3 in the hub's durable log".to_owned()))
    })
    .await?;

    let mut methods = device.method_requests().await.map_err(err)?;
    let answering = {
        let device = device.clone();
        tokio::spawn(async move {
            while let Some(request) = methods.recv().await {
                let payload = json!({"firmware": "1.0.0", "asked": request.payload});
                let _ = device
                    .respond_to_method(MethodResponse::new(request.request_id, 200, payload))
                    .await;
            }
        })
    };
    t.step("invoke a direct method (service → device)", async {
        let answer = service
            .invoke_device_method(
                DEVICE,
                &DirectMethodRequest::new("getStatus", json!({"verbose": true}))
                    .with_response_timeout(10),
            )
            .await
            .map_err(err)?;
        if answer.status != 200 {
            return Err(format!("the device answered {}", answer.status));
        }
        Ok(((), format!("status 200, payload {}", answer.payload)))
    })
    .await?;

    let mut patches = device.desired_property_patches().await.map_err(err)?;
    t.step("desired property → device → reported back", async {
        service
            .update_twin(
                DEVICE,
                &TwinPatch::new()
                    .desired(json!({"telemetryInterval": 10}))
                    .map_err(err)?,
                IfMatch::Any,
            )
            .await
            .map_err(err)?;
        let patch = patches.recv().await.ok_or("the desired stream ended")?;
        let interval = patch.patch["telemetryInterval"].clone();
        device
            .update_reported_properties(&json!({"telemetryInterval": interval}))
            .await
            .map_err(err)?;
        let twin = service.get_twin(DEVICE).await.map_err(err)?;
        let reported = twin.properties.reported.get("telemetryInterval").cloned();
        if reported != Some(json!(10)) {
            return Err(format!("the twin reports {reported:?}"));
        }
        Ok(((), format!("desired v{} → reported 10", patch.version)))
    })
    .await?;

    let mut inbox = device.cloud_to_device_messages().await.map_err(err)?;
    t.step("cloud-to-device message with feedback (AMQP)", async {
        let messaging = service.messaging().await.map_err(err)?;
        let mut feedback = messaging.feedback().await.map_err(err)?;
        let id = messaging
            .send(
                DEVICE,
                CloudToDeviceMessage::new("turn on the fan")
                    .message_id("quickstart-1")
                    .feedback(FeedbackMode::Full),
            )
            .await
            .map_err(err)?;
        let received = inbox.recv().await.ok_or("the C2D stream ended")?;
        let body = String::from_utf8_lossy(received.body()).into_owned();
        let status = feedback_status(&mut feedback, &id).await?;
        let _ = messaging.close().await;
        if status != FeedbackStatus::Success {
            return Err(format!("feedback {status:?}"));
        }
        Ok(((), format!("device got {body:?}; feedback Success")))
    })
    .await?;

    t.step(
        "upload a file (HTTPS, blob endpoint) → notification",
        async {
            let text = "hello from the quickstart\n";
            device
                .upload_file("quickstart/hello.txt", text)
                .await
                .map_err(err)?;
            let messaging = service.messaging().await.map_err(err)?;
            let mut notifications = messaging.file_notifications().await.map_err(err)?;
            let batch = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                notifications.next_batch(),
            )
            .await
            .map_err(|_| "no file-upload notification within 10 s".to_owned())?
            .map_err(err)?;
            let detail = match batch.records.first() {
                Some(n) => format!(
                    "{} ({} bytes) in storage; the back end was notified",
                    n.blob_name, n.blob_size_in_bytes
                ),
                None => return Err("an empty file-upload notification".into()),
            };
            notifications.complete(batch).await.map_err(err)?;
            messaging.close().await.map_err(err)?;
            Ok(((), detail))
        },
    )
    .await?;

    t.step("close the device", async {
        device.close().await;
        Ok(((), format!("{:?}", device.connection_state())))
    })
    .await?;
    answering.abort();
    amqp_device(t, hub, &service).await
}

/// Provisions [`DEVICE`] through the emulator's DPS, as a fleet of devices would be: a
/// symmetric-key enrollment group (keys generated by DPS), the device's key derived from the
/// group key, registration with the provisioning device client. DPS creates the device at the
/// hub with the derived key.
async fn provision(t: &mut Transcript, hub: &EmulatorHandle) -> Result<RegistrationResult, String> {
    let dps = ProvisioningServiceClient::from_connection_string(
        &hub.dps_connection_string(),
        ProvisioningServiceClientOptions::default()
            .trusted_ca_pem(hub.ca_pem())
            .https_port(hub.https_addr().port()),
    )
    .map_err(err)?;
    let group_key = t
        .step("create an enrollment group (DPS, group key)", async {
            // Empty keys: DPS generates them and answers with them.
            let group = dps
                .create_or_update_enrollment_group(
                    &EnrollmentGroup::new(GROUP, Attestation::symmetric_key("", "")),
                    azure_iot_provisioning_service::IfMatch::Any,
                )
                .await
                .map_err(err)?;
            let key = group
                .attestation
                .symmetric_key
                .map(|keys| keys.primary_key)
                .filter(|key| !key.is_empty())
                .ok_or("DPS generated no group key")?;
            Ok((key, format!("{GROUP}, keys generated by DPS")))
        })
        .await?;
    let device_key = t
        .step("derive the device key from the group key", async {
            let key = derive_device_key(&group_key, DEVICE).map_err(err)?;
            Ok((key, format!("HMAC-SHA256(group key, \"{DEVICE}\")")))
        })
        .await?;
    t.step("register through DPS (MQTT, derived key)", async {
        let client = ProvisioningDeviceClient::builder(
            hub.dps_id_scope(),
            DeviceAttestation::symmetric_key(&device_key).map_err(err)?,
        )
        .registration_id(DEVICE)
        .global_endpoint(hub.dps_hostname())
        .port(hub.mqtt_addr().port())
        .transport(Transport::Mqtt)
        .trusted_ca_pem(hub.ca_pem())
        .timeout(STEP_LIMIT)
        .build()
        .map_err(err)?;
        let result = client.register().await.map_err(err)?;
        let detail = format!(
            "id scope {} → {} on {}",
            hub.dps_id_scope(),
            result.device_id(),
            result.assigned_hub()
        );
        Ok((result, detail))
    })
    .await
}

/// The status the next feedback batch gives the message `id` (the batch is completed).
async fn feedback_status(
    feedback: &mut azure_iot_service::FeedbackReceiver,
    id: &str,
) -> Result<FeedbackStatus, String> {
    let batch = feedback.next_batch().await.map_err(err)?;
    let status = batch
        .records
        .iter()
        .find(|r| r.original_message_id == id)
        .map(|r| r.status_code.clone())
        .ok_or("the feedback batch does not name the message")?;
    feedback.complete(batch).await.map_err(err)?;
    Ok(status)
}

/// A second device over AMQP, for what MQTT cannot do: a batch stored whole, and a
/// cloud-to-device message rejected (the sender's feedback says so).
async fn amqp_device(
    t: &mut Transcript,
    hub: &azure_iot_emulator::EmulatorHandle,
    service: &ServiceClient,
) -> Result<(), String> {
    const AMQP_DEVICE: &str = "quickstart-amqp-device";
    t.step("a device over AMQP: batch send, C2D rejected", async {
        let created = service
            .create_device(&Device::new(AMQP_DEVICE))
            .await
            .map_err(err)?;
        let key = created.primary_key().ok_or("the hub generated no key")?;
        let cs = format!(
            "HostName={};DeviceId={AMQP_DEVICE};SharedAccessKey={key}",
            hub.hostname()
        );
        let device = DeviceClient::from_connection_string(
            &cs,
            ClientOptions::default()
                .trusted_ca_pem(hub.ca_pem())
                .transport(Transport::Amqp)
                .port(hub.amqp_addr().port()),
        )
        .await
        .map_err(err)?;
        let batch = (1..=3)
            .map(|n| Message::new(json!({"reading": n}).to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        device.send_event_batch(batch).await.map_err(err)?;
        let logged = hub.telemetry(0, 1000).await.map_err(err)?;
        let ours = logged.iter().filter(|e| e.device_id == AMQP_DEVICE).count();
        if ours != 3 {
            return Err(format!("the hub logged {ours} batched messages, not 3"));
        }
        let mut inbox = device
            .cloud_to_device_messages_with_settlement()
            .await
            .map_err(err)?;
        let messaging = service.messaging().await.map_err(err)?;
        let mut feedback = messaging.feedback().await.map_err(err)?;
        let id = messaging
            .send(
                AMQP_DEVICE,
                CloudToDeviceMessage::new("an order it cannot follow")
                    .message_id("quickstart-2")
                    .feedback(FeedbackMode::Full),
            )
            .await
            .map_err(err)?;
        let mut received = inbox.recv().await.ok_or("the C2D stream ended")?;
        received.reject().await.map_err(err)?;
        let status = feedback_status(&mut feedback, &id).await?;
        let _ = messaging.close().await;
        device.close().await;
        if status != FeedbackStatus::Rejected {
            return Err(format!("feedback {status:?}"));
        }
        Ok((
            (),
            "3 events in one batch; C2D rejected → feedback Rejected".to_owned(),
        ))
    })
    .await
}
