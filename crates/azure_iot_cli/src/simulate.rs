//! `azure-iot device simulate`: a device sending N telemetry messages at a rate, with a
//! progress line and a summary of sent / acknowledged / failed and messages per second.

use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use azure_iot_device::{ClientOptions, DeviceClient, Message};
use clap::Args;
use futures_util::StreamExt;

use crate::target::HubArgs;

#[derive(Args)]
pub(crate) struct SimulateArgs {
    /// The device id (its key is read from the registry).
    #[arg(long, short = 'd')]
    device_id: String,
    /// Messages to send.
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Messages per second (default: as fast as acknowledgements allow).
    #[arg(long)]
    rate: Option<f64>,
    /// Body size in bytes (a JSON document padded to this size).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages in flight at once (1: wait for each acknowledgement).
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Connect with this device connection string instead of reading the key from the registry.
    #[arg(long, env = "IOTHUB_DEVICE_CONNECTION_STRING", hide_env_values = true)]
    device_connection_string: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
}

fn body(index: u64, size: usize) -> Vec<u8> {
    let mut text = format!("{{\"n\":{index},\"pad\":\"");
    while text.len() + 2 < size {
        text.push('x');
    }
    text.push_str("\"}");
    text.into_bytes()
}

pub(crate) async fn run(args: SimulateArgs) -> Result<(), String> {
    if args.in_flight == 0 {
        return Err("--in-flight must be at least 1".into());
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err("--rate must be a positive number of messages per second".into());
    }
    let (connection_string, mqtt_port, ca_pem) = match &args.device_connection_string {
        // A device connection string needs no service credentials; the local emulator's port
        // and CA apply only if it names the emulator's host.
        Some(cs) => {
            let host = azure_iot_core::DeviceConnectionString::parse(cs)
                .map_err(|e| format!("--device-connection-string: {e}"))?
                .connect_host()
                .to_owned();
            let local = args.hub.local_device_endpoint(&host);
            let ca = match &args.hub.ca_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                ),
                None => local.as_ref().map(|(_, ca)| ca.clone()),
            };
            (cs.clone(), local.map_or(8883, |(port, _)| port), ca)
        }
        None => {
            let hub = args.hub.resolve()?;
            let cs = crate::devices::connection_string(&hub, &args.device_id, None, false).await?;
            (cs, hub.mqtt_port, hub.ca_pem)
        }
    };
    let mut options = ClientOptions::default().port(mqtt_port);
    if let Some(pem) = ca_pem {
        options = options.trusted_ca_pem(pem);
    }
    let client = DeviceClient::from_connection_string(&connection_string, options)
        .await
        .map_err(|e| format!("device {}: {e}", args.device_id))?;

    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    let progress = tokio::spawn(show_progress(
        args.count,
        acked.clone(),
        failed.clone(),
        std::io::stderr().is_terminal(),
    ));
    // After a stall (a slow acknowledgement), keep the rate instead of bursting to catch up.
    let pace = args.rate.map(|r| {
        let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every
    });
    let count = args.count;
    let ticks = futures_util::stream::unfold((0, pace), move |(i, mut pace)| async move {
        if i >= count {
            return None;
        }
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        Some((i, (i + 1, pace)))
    });
    ticks
        .map(|i| {
            let client = client.clone();
            let size = args.size;
            async move {
                let message = Message::builder(body(i, size))
                    .content_type("application/json")
                    .content_encoding("utf-8")
                    .build()
                    .map_err(|e| e.to_string())?;
                client.send_event(message).await.map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(args.in_flight)
        .for_each(|result| {
            match result {
                Ok(()) => acked.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    first.get_or_insert(e);
                    failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            async {}
        })
        .await;
    let elapsed = started.elapsed();
    progress.abort();
    if std::io::stderr().is_terminal() && args.count > 0 {
        eprintln!();
    }
    client.close().await;
    let (acked, failed) = (
        acked.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    let rate = acked as f64 / elapsed.as_secs_f64().max(1e-9);
    crate::print_line(&format!(
        "device {}: sent {}, acknowledged {acked}, failed {failed} in {:.2} s ({rate:.0} msgs/s)",
        args.device_id,
        acked + failed,
        elapsed.as_secs_f64(),
    ))?;
    match first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(e) => Err(format!("{failed} message(s) failed; the first: {e}")),
        None => Ok(()),
    }
}

async fn show_progress(total: u64, acked: Arc<AtomicU64>, failed: Arc<AtomicU64>, tty: bool) {
    if !tty || total == 0 {
        return;
    }
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        every.tick().await;
        let (a, f) = (
            acked.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
        );
        let filled = ((a + f) * 30 / total) as usize;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {}/{total} acknowledged, {f} failed",
            "#".repeat(filled),
            " ".repeat(30 - filled.min(30)),
            a
        );
        let _ = err.flush();
    }
}
