//! `azure-iot method invoke` and `azure-iot c2d send`.

use std::time::Duration;

use azure_iot_service::{CloudToDeviceMessage, DirectMethodRequest, FeedbackMode};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::print_json;
use crate::target::HubArgs;

#[derive(Subcommand)]
pub(crate) enum MethodCommand {
    /// Call a direct method on a device or module and print its answer.
    Invoke(InvokeArgs),
}

#[derive(Args)]
pub(crate) struct InvokeArgs {
    /// The device id.
    #[arg(long, short = 'd')]
    device_id: String,
    /// A module of the device.
    #[arg(long, short = 'm')]
    module_id: Option<String>,
    #[command(flatten)]
    call: MethodCallArgs,
    #[command(flatten)]
    hub: HubArgs,
}

/// A direct method call: name, payload and timeouts (`method invoke`, `job schedule-method`).
#[derive(Args)]
pub(crate) struct MethodCallArgs {
    /// The method name.
    #[arg(long, short = 'n')]
    method_name: String,
    /// The payload (JSON).
    #[arg(long, default_value = "null")]
    payload: String,
    /// Seconds the hub waits for the device's answer (5 to 300).
    #[arg(long, default_value_t = 30)]
    timeout: u32,
    /// Seconds the hub waits for an offline device to connect (0: fail at once).
    #[arg(long, default_value_t = 0)]
    connect_timeout: u32,
}

impl MethodCallArgs {
    /// The request these arguments describe.
    pub(crate) fn request(&self) -> Result<DirectMethodRequest, String> {
        let payload: Value = serde_json::from_str(&self.payload)
            .map_err(|e| format!("--payload is not valid JSON: {e}"))?;
        Ok(DirectMethodRequest::new(&self.method_name, payload)
            .with_response_timeout(self.timeout)
            .with_connect_timeout(self.connect_timeout))
    }
}

#[derive(Subcommand)]
pub(crate) enum C2dCommand {
    /// Send a cloud-to-device message.
    Send(SendArgs),
}

/// Which outcomes produce feedback.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Ack {
    None,
    Positive,
    Negative,
    Full,
}

#[derive(Args)]
pub(crate) struct SendArgs {
    /// The device id.
    #[arg(long, short = 'd')]
    device_id: String,
    /// The message body.
    #[arg(long)]
    data: String,
    /// The message id (generated when absent).
    #[arg(long)]
    message_id: Option<String>,
    /// The correlation id.
    #[arg(long)]
    correlation_id: Option<String>,
    /// The content type.
    #[arg(long)]
    content_type: Option<String>,
    /// An application property `name=value` (repeatable).
    #[arg(long = "property", short = 'p', value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// Which outcomes produce feedback.
    #[arg(long, value_enum, default_value_t = Ack::None)]
    ack: Ack,
    /// Seconds until the message expires.
    #[arg(long)]
    ttl: Option<u64>,
    /// Wait up to this many seconds for the message's feedback and print it (needs --ack).
    /// This reads the hub's feedback queue: records of other messages read meanwhile are
    /// completed too, and shown on stderr.
    #[arg(long)]
    wait_feedback: Option<u64>,
    #[command(flatten)]
    hub: HubArgs,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("a property is name=value, not {text:?}"))
}

pub(crate) async fn method(command: MethodCommand) -> Result<(), String> {
    let MethodCommand::Invoke(args) = command;
    let request = args.call.request()?;
    let hub = args.hub.resolve()?;
    let answer = match &args.module_id {
        Some(module) => {
            hub.service
                .invoke_module_method(&args.device_id, module, &request)
                .await
        }
        None => {
            hub.service
                .invoke_device_method(&args.device_id, &request)
                .await
        }
    }
    .map_err(|e| e.to_string())?;
    print_json(&json!({"status": answer.status, "payload": answer.payload}))
}

pub(crate) async fn c2d(command: C2dCommand) -> Result<(), String> {
    let C2dCommand::Send(args) = command;
    let feedback = match args.ack {
        Ack::None => FeedbackMode::None,
        Ack::Positive => FeedbackMode::Positive,
        Ack::Negative => FeedbackMode::Negative,
        Ack::Full => FeedbackMode::Full,
    };
    if args.wait_feedback.is_some() && feedback == FeedbackMode::None {
        return Err("--wait-feedback needs --ack positive, negative or full".into());
    }
    let mut message = CloudToDeviceMessage::new(args.data.clone().into_bytes()).feedback(feedback);
    if let Some(id) = &args.message_id {
        message = message.message_id(id);
    }
    if let Some(id) = &args.correlation_id {
        message = message.correlation_id(id);
    }
    if let Some(value) = &args.content_type {
        message = message.content_type(value);
    }
    if let Some(ttl) = args.ttl {
        message = message.time_to_live(Duration::from_secs(ttl));
    }
    for (name, value) in &args.properties {
        message = message.property(name, value);
    }
    let hub = args.hub.resolve()?;
    let messaging = hub.service.messaging().await.map_err(|e| e.to_string())?;
    // Attach the feedback link first, so no record can be missed.
    let receiver = match args.wait_feedback {
        Some(_) => Some(messaging.feedback().await.map_err(|e| e.to_string())?),
        None => None,
    };
    let id = messaging
        .send(&args.device_id, message)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("sent message {id} to {}", args.device_id);
    if let (Some(mut receiver), Some(seconds)) = (receiver, args.wait_feedback) {
        // Read the feedback queue until our record comes, completing what is read: holding
        // other batches would stop the hub from sending more (link credit, and each batch's
        // lock), and giving them back would have them handed straight back. Records for other
        // messages are shown on stderr, so nothing is consumed silently.
        let wait = async {
            loop {
                let batch = receiver.next_batch().await.map_err(|e| e.to_string())?;
                let ours = batch
                    .records
                    .iter()
                    .find(|r| r.original_message_id == id)
                    .cloned();
                for other in batch.records.iter().filter(|r| r.original_message_id != id) {
                    eprintln!(
                        "note: completed the feedback of another message: {} to {}: {:?}",
                        other.original_message_id, other.device_id, other.status_code
                    );
                }
                receiver.complete(batch).await.map_err(|e| e.to_string())?;
                if let Some(record) = ours {
                    return Ok::<_, String>(record);
                }
            }
        };
        let record = tokio::time::timeout(Duration::from_secs(seconds), wait)
            .await
            .map_err(|_| format!("no feedback for message {id} within {seconds} s"))??;
        print_json(&json!({
            "originalMessageId": record.original_message_id,
            "deviceId": record.device_id,
            "statusCode": format!("{:?}", record.status_code),
            "description": record.description,
            "enqueuedTimeUtc": record.enqueued_time_utc,
        }))?;
    }
    let _ = messaging.close().await;
    Ok(())
}
