//! `azure-iot device simulate`: a device sending N telemetry messages at a rate, with a
//! progress line and a summary of sent / acknowledged / failed and messages per second.
//!
//! Failures are bounded twice. Each message has `--timeout` seconds from the send to the hub's
//! acknowledgement (the client's operation timeout: reconnecting by the client's retry policy
//! happens within it, so a dropped connection or a hub restart shorter than that costs no
//! message). And once `--max-failures` messages in a row have failed (the device was deleted
//! or disabled, the hub is gone or never acknowledges), the run stops with an error naming
//! the last failure and how many were sent, instead of working through every remaining
//! message; one acknowledged message resets the count, so a lone failure never stops it.

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
    /// Stop with an error once this many messages in a row have failed (0: never stop; try
    /// every message).
    #[arg(long, default_value_t = 3)]
    max_failures: u64,
    /// Seconds one message may take from the send to the hub's acknowledgement, reconnecting
    /// included; after that it counts as failed.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
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
    let mut options = ClientOptions::default()
        .port(mqtt_port)
        .operation_timeout(Duration::from_secs(args.timeout));
    if let Some(pem) = ca_pem {
        options = options.trusted_ca_pem(pem);
    }
    let client = DeviceClient::from_connection_string(&connection_string, options)
        .await
        .map_err(|e| format!("device {}: {e}", args.device_id))?;

    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let progress = tokio::spawn(show_progress(
        args.count,
        acked.clone(),
        failed.clone(),
        std::io::stderr().is_terminal(),
    ));
    let outcome = send_all(&client, &args, &acked, &failed).await;
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
    match outcome {
        Outcome::Done { first_error: None } => Ok(()),
        Outcome::Done {
            first_error: Some(e),
        } => Err(format!("{failed} message(s) failed; the first: {e}")),
        Outcome::GaveUp {
            in_a_row,
            last_error,
        } => Err(format!(
            "stopped after {in_a_row} messages in a row failed (--max-failures {}): \
             {acked} of {} acknowledged, {failed} failed; the last failure: {last_error}",
            args.max_failures, args.count,
        )),
    }
}

/// How a run ended.
enum Outcome {
    /// Every message was sent; `first_error` is the first failure, if any.
    Done {
        /// The first failure's message.
        first_error: Option<String>,
    },
    /// `--max-failures` messages in a row failed: the run stopped early.
    GaveUp {
        /// How many failed in a row.
        in_a_row: u64,
        /// The last failure's message.
        last_error: String,
    },
}

/// Sends `args.count` messages (at `args.rate`, `args.in_flight` at once), counting
/// acknowledgements and failures as they finish; stops early once `args.max_failures`
/// finish failed in a row. Messages still in flight then are dropped, and a client never
/// sends a message whose caller dropped it.
async fn send_all(
    client: &DeviceClient,
    args: &SimulateArgs,
    acked: &AtomicU64,
    failed: &AtomicU64,
) -> Outcome {
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
    let mut results = std::pin::pin!(
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
    );
    let mut streak = FailureStreak::new(args.max_failures);
    while let Some(result) = results.next().await {
        let counter = if result.is_ok() { acked } else { failed };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(gave_up) = streak.record(result) {
            return gave_up;
        }
    }
    Outcome::Done {
        first_error: streak.first_error,
    }
}

/// The stopping rule, apart from any I/O: failures in a row, reset by a success.
struct FailureStreak {
    /// Stop at this many failures in a row (0: never).
    max: u64,
    /// Failures since the last success.
    in_a_row: u64,
    /// The run's first failure.
    first_error: Option<String>,
}

impl FailureStreak {
    /// No failure yet; `max` 0 never stops.
    fn new(max: u64) -> Self {
        Self {
            max,
            in_a_row: 0,
            first_error: None,
        }
    }

    /// Counts one finished message; `Some` when the run must stop here.
    fn record(&mut self, result: Result<(), String>) -> Option<Outcome> {
        match result {
            Ok(()) => {
                self.in_a_row = 0;
                None
            }
            Err(e) => {
                self.in_a_row += 1;
                if self.max > 0 && self.in_a_row >= self.max {
                    return Some(Outcome::GaveUp {
                        in_a_row: self.in_a_row,
                        last_error: e,
                    });
                }
                self.first_error.get_or_insert(e);
                None
            }
        }
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

#[cfg(test)]
mod tests {
    use super::{FailureStreak, Outcome};

    fn fail(n: u32) -> Result<(), String> {
        Err(format!("failure {n}"))
    }

    #[test]
    fn a_success_resets_the_failures_in_a_row() {
        let mut streak = FailureStreak::new(3);
        for result in [fail(1), fail(2), Ok(()), fail(3), fail(4), Ok(()), fail(5)] {
            assert!(streak.record(result).is_none());
        }
        assert_eq!(streak.first_error.as_deref(), Some("failure 1"));
        assert!(streak.record(fail(6)).is_none());
        match streak.record(fail(7)) {
            Some(Outcome::GaveUp {
                in_a_row,
                last_error,
            }) => assert_eq!((in_a_row, last_error.as_str()), (3, "failure 7")),
            _ => panic!("three failures in a row stop the run"),
        }
    }

    #[test]
    fn zero_never_stops_and_one_stops_at_the_first_failure() {
        let mut never = FailureStreak::new(0);
        for n in 0..1000 {
            assert!(never.record(fail(n)).is_none());
        }
        let mut strict = FailureStreak::new(1);
        assert!(strict.record(Ok(())).is_none());
        assert!(matches!(
            strict.record(fail(0)),
            Some(Outcome::GaveUp { in_a_row: 1, .. })
        ));
    }
}
