//! `azure-iot hub monitor-events --emulator-api`, `monitor-feedback` and
//! `monitor-file-notifications`.
//!
//! `monitor-events --emulator-api` long-polls the emulator's telemetry log
//! (`GET /$emulator/telemetry`, see the emulator's docs): from now, or from the start of the
//! retained log with `--from-start`; optionally for one device or one partition of the log;
//! stopping after `--timeout` seconds or `--count` messages. Without `--emulator-api`,
//! `monitor-events` reads the Event Hubs-compatible endpoint (`monitor_events.rs`).
//! `monitor-feedback` reads and completes cloud-to-device feedback batches.
//! `monitor-file-notifications` reads and completes file-upload notifications (over AMQP, with
//! the service client: the hub has no REST endpoint for them).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use reqwest::Method;
use serde_json::Value;

use crate::connect::HubConnection;

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Human-readable blocks.
    Text,
    /// One JSON object per line.
    Json,
}

/// What `monitor-events --emulator-api` reads (the emulator's own telemetry log over HTTPS).
pub(crate) struct HttpMonitor {
    /// The emulator's data directory (its hub.json and ca.pem).
    pub(crate) data_dir: PathBuf,
    /// Only messages from this device.
    pub(crate) device_id: Option<String>,
    /// Only messages in this partition of the telemetry log.
    pub(crate) partition: Option<u32>,
    /// Output format.
    pub(crate) output: Output,
    /// Start at the beginning of the retained log instead of now.
    pub(crate) from_start: bool,
    /// Stop after this many seconds.
    pub(crate) timeout: Option<u64>,
    /// Stop after this many messages.
    pub(crate) count: Option<u64>,
}

#[derive(Args)]
pub(crate) struct FeedbackArgs {
    /// The emulator's data directory (its hub.json and ca.pem).
    #[arg(long, env = "AZURE_IOT_HUB_DATA_DIR", default_value = ".azure-iot-hub")]
    data_dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Stop after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Stop after this many records.
    #[arg(long)]
    count: Option<u64>,
}

/// The longest single long poll.
const POLL_SECS: u64 = 30;

/// `monitor-events --emulator-api`: long-polls `/$emulator/telemetry`.
pub(crate) async fn monitor_events_http(args: HttpMonitor) -> Result<(), String> {
    let hub = HubConnection::from_data_dir(&args.data_dir)?;
    let deadline = args
        .timeout
        .map(|t| Instant::now() + Duration::from_secs(t));
    let device = args
        .device_id
        .as_deref()
        .map(|d| {
            format!(
                "&deviceId={}",
                azure_iot_core::encoding::encode_component(d)
            )
        })
        .unwrap_or_default();
    let filter = match args.partition {
        Some(p) => format!("{device}&partition={p}"),
        None => device,
    };
    let mut after = if args.from_start {
        0
    } else {
        hub.send(
            Method::GET,
            &format!("/$emulator/telemetry?after={}&limit=1", u64::MAX),
        )
        .await?
        .latest
        .unwrap_or(0)
    };
    let mut seen = 0u64;
    if args.output == Output::Text {
        eprintln!(
            "Monitoring telemetry{}. Press Ctrl-C to stop.",
            args.device_id
                .as_deref()
                .map(|d| format!(" from {d}"))
                .unwrap_or_default()
        );
    }
    loop {
        let wait = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_secs()
                .min(POLL_SECS),
            None => POLL_SECS,
        };
        let reply = hub
            .send(
                Method::GET,
                &format!("/$emulator/telemetry?after={after}&limit=100&wait={wait}{filter}"),
            )
            .await?;
        for event in reply.body.as_array().into_iter().flatten() {
            after = after.max(event["sequenceNumber"].as_u64().unwrap_or(after));
            print_event(event, args.output);
            seen += 1;
            if args.count.is_some_and(|c| seen >= c) {
                return Ok(());
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
    }
}

pub(crate) async fn monitor_feedback(args: FeedbackArgs) -> Result<(), String> {
    let hub = HubConnection::from_data_dir(&args.data_dir)?;
    let deadline = args
        .timeout
        .map(|t| Instant::now() + Duration::from_secs(t));
    let mut seen = 0u64;
    loop {
        let reply = hub
            .send(Method::GET, "/messages/serviceBound/feedback")
            .await?;
        if reply.status == 200 {
            for record in reply.body.as_array().into_iter().flatten() {
                match args.output {
                    Output::Json => println!("{record}"),
                    Output::Text => println!(
                        "feedback for message {} to {}: {} at {}",
                        record["originalMessageId"].as_str().unwrap_or("?"),
                        record["deviceId"].as_str().unwrap_or("?"),
                        record["statusCode"].as_str().unwrap_or("?"),
                        record["enqueuedTimeUtc"].as_str().unwrap_or("?"),
                    ),
                }
                seen += 1;
            }
            if let Some(lock) = reply.etag {
                hub.send(
                    Method::DELETE,
                    &format!("/messages/serviceBound/feedback/{lock}"),
                )
                .await?;
            }
            let _ = std::io::stdout().flush();
        }
        if args.count.is_some_and(|c| seen >= c) || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        if reply.status != 200 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn print_event(event: &Value, output: Output) {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let _ = writeln!(out, "{event}");
        }
        Output::Text => {
            let from = match event["moduleId"].as_str() {
                Some(m) => format!("{}/{m}", event["deviceId"].as_str().unwrap_or("?")),
                None => event["deviceId"].as_str().unwrap_or("?").to_owned(),
            };
            let position = match (event["partition"].as_u64(), event["offset"].as_str()) {
                (Some(p), Some(o)) => format!(" (partition {p}, offset {o})"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "event #{} from {from} at {}{position}:",
                event["sequenceNumber"],
                event["enqueuedTime"].as_str().unwrap_or("?")
            );
            match event["body"].as_str() {
                Some(text) => {
                    let _ = writeln!(out, "  body: {text}");
                }
                None => {
                    let _ = writeln!(
                        out,
                        "  body (base64): {}",
                        event["bodyBase64"].as_str().unwrap_or("")
                    );
                }
            }
            for (title, key) in [("properties", "properties"), ("system", "systemProperties")] {
                if let Some(map) = event[key].as_object().filter(|m| !m.is_empty()) {
                    let pairs: Vec<String> = map
                        .iter()
                        .map(|(k, v)| {
                            format!(
                                "{k}={}",
                                v.as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| v.to_string())
                            )
                        })
                        .collect();
                    let _ = writeln!(out, "  {title}: {}", pairs.join(" "));
                }
            }
        }
    }
    let _ = out.flush();
}

#[derive(Args)]
pub(crate) struct FileNotificationArgs {
    #[command(flatten)]
    hub: crate::target::HubArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Stop after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Stop after this many notifications.
    #[arg(long)]
    count: Option<u64>,
}

/// `azure-iot hub monitor-file-notifications`: prints and completes file-upload notifications,
/// read over AMQP with the service client (IoT Hub has no REST endpoint for them).
pub(crate) async fn monitor_file_notifications(args: FileNotificationArgs) -> Result<(), String> {
    let hub = args.hub.resolve()?;
    let messaging = hub.service.messaging().await.map_err(|e| e.to_string())?;
    let mut receiver = messaging
        .file_notifications()
        .await
        .map_err(|e| e.to_string())?;
    let read = async {
        let mut seen = 0u64;
        loop {
            if args.count.is_some_and(|c| seen >= c) {
                return Ok::<(), String>(());
            }
            let batch = receiver.next_batch().await.map_err(|e| e.to_string())?;
            for n in &batch.records {
                match args.output {
                    Output::Json => println!(
                        "{}",
                        serde_json::json!({
                            "deviceId": n.device_id,
                            "blobName": n.blob_name,
                            "blobUri": n.blob_uri,
                            "blobSizeInBytes": n.blob_size_in_bytes,
                            "lastUpdatedTime": n.last_updated_time,
                            "enqueuedTimeUtc": n.enqueued_time_utc,
                        })
                    ),
                    Output::Text => println!(
                        "{} uploaded {} ({} bytes) at {}",
                        n.device_id, n.blob_name, n.blob_size_in_bytes, n.last_updated_time
                    ),
                }
                seen += 1;
            }
            let _ = std::io::stdout().flush();
            receiver.complete(batch).await.map_err(|e| e.to_string())?;
        }
    };
    let result = match args.timeout {
        Some(seconds) => match tokio::time::timeout(Duration::from_secs(seconds), read).await {
            Ok(result) => result,
            Err(_) => Ok(()),
        },
        None => read.await,
    };
    let _ = messaging.close().await;
    result
}
