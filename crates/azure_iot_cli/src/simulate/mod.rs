//! `azure-iot device simulate`: a fleet simulator. One device or thousands, created on demand
//! in the emulator or taken from a list of connection strings for a real hub, sending
//! telemetry at a rate with per-message fields, over MQTT (a connection per device) or AMQP
//! (devices multiplexed on shared connections); a live progress line and a summary (text, or
//! JSON with `--output json`). It is the tool to load-test a solution against the emulator or
//! a real hub.
//!
//! A run has two phases. **Connect**: every device connects, `--connect-concurrency` at a
//! time (the connect time and this process's memory once all are connected are part of the
//! summary). **Send**: every connected device sends `--count` messages at `--rate` per second,
//! `--in-flight` at a time.
//!
//! Failures are bounded twice. Each message has `--timeout` seconds from the send to the hub's
//! acknowledgement (the client's operation timeout: reconnecting by the client's retry policy
//! happens within it, so a dropped connection or a hub restart shorter than that costs no
//! message). And once `--max-failures` messages of one device in a row have failed (the
//! device was deleted or disabled, the hub is gone or never acknowledges), that device stops
//! instead of working through every remaining message, and the run ends with an error naming
//! the last failure and how many were sent; one acknowledged message resets the count, so a
//! lone failure never stops a device.

pub(crate) mod fleet;
mod payload;
mod stats;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use azure_iot_device::{AmqpPool, ClientOptions, DeviceClient, Message, Transport};
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use serde_json::json;

use crate::target::HubArgs;
use fleet::{Fleet, Identity};
use payload::{Payload, Random};
use stats::{Counters, millis, resident_bytes};

#[derive(Args)]
pub(crate) struct SimulateArgs {
    /// The device id (its key is read from the registry).
    #[arg(long, short = 'd', required_unless_present_any = ["devices", "connection_strings", "device_connection_string"])]
    device_id: Option<String>,
    /// Simulate this many devices, `{device-prefix}0..N`; the ones missing from the registry
    /// are created (with new keys), the others' keys are read from it.
    #[arg(long, conflicts_with_all = ["device_id", "connection_strings"], value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    devices: Option<u64>,
    /// The id prefix of `--devices`.
    #[arg(long, default_value = "sim-", requires = "devices")]
    device_prefix: String,
    /// A file of device connection strings, one per line: simulate those devices (for a hub
    /// whose registry this tool cannot write). Blank lines and `#` comments are skipped.
    #[arg(long, conflicts_with_all = ["device_id", "device_connection_string"])]
    connection_strings: Option<PathBuf>,
    /// Messages to send, per device.
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Messages per second, per device (default: as fast as acknowledgements allow).
    #[arg(long)]
    rate: Option<f64>,
    /// Body size in bytes (a JSON document padded to this size), when there is no `--payload`.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// The body of each message: text with `{{counter}}`, `{{device_id}}`, `{{timestamp}}`,
    /// `{{random}}` or `{{random:MIN:MAX}}` filled in per message. Sent as application/json.
    #[arg(long, conflicts_with = "size")]
    payload: Option<String>,
    /// Messages in flight at once, per device (1: wait for each acknowledgement).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    in_flight: u64,
    /// How the devices connect. AMQP transports multiplex devices on shared connections.
    #[arg(long, value_enum, default_value_t = TransportArg::Mqtt)]
    transport: TransportArg,
    /// With AMQP: devices per connection (IoT Hub allows at most 999).
    #[arg(long, default_value_t = 999)]
    devices_per_connection: usize,
    /// Devices connecting at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    connect_concurrency: u64,
    /// Stop a device with an error once this many of its messages in a row have failed (0:
    /// never stop; try every message).
    #[arg(long, default_value_t = 3)]
    max_failures: u64,
    /// Seconds one message may take from the send to the hub's acknowledgement, reconnecting
    /// included; after that it counts as failed.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// The summary's format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Connect with this device connection string instead of reading the key from the registry.
    #[arg(long, env = "IOTHUB_DEVICE_CONNECTION_STRING", hide_env_values = true)]
    device_connection_string: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
}

/// `--transport`: the device transports by their command-line names.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum TransportArg {
    Mqtt,
    MqttWs,
    Amqp,
    AmqpWs,
    Https,
}

impl TransportArg {
    /// The device client's transport.
    pub(crate) fn transport(self) -> Transport {
        match self {
            Self::Mqtt => Transport::Mqtt,
            Self::MqttWs => Transport::MqttWebSockets,
            Self::Amqp => Transport::Amqp,
            Self::AmqpWs => Transport::AmqpWebSockets,
            Self::Https => Transport::Https,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Mqtt => "mqtt",
            Self::MqttWs => "mqtt-ws",
            Self::Amqp => "amqp",
            Self::AmqpWs => "amqp-ws",
            Self::Https => "https",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

pub(crate) async fn run(args: SimulateArgs) -> Result<(), String> {
    if args.rate.is_some_and(|r| !(1e-3..=1e6).contains(&r)) {
        return Err("--rate must be 0.001 to 1,000,000 messages per second".into());
    }
    let payload = match &args.payload {
        Some(template) => Payload::template(template)?,
        None => Payload::Padded(args.size),
    };
    let transport = args.transport.transport();
    let pool = if transport.is_amqp() {
        Some(
            AmqpPool::new(args.devices_per_connection)
                .map_err(|e| format!("--devices-per-connection: {e}"))?,
        )
    } else {
        None
    };
    let concurrency = usize::try_from(args.connect_concurrency).unwrap_or(usize::MAX);
    let fleet = resolve(&args, concurrency).await?;
    let mut options = ClientOptions::default()
        .transport(transport)
        .operation_timeout(Duration::from_secs(args.timeout));
    if let Some(ports) = fleet.ports {
        options = options.port(ports.of(transport));
    }
    if let Some(pem) = &fleet.ca_pem {
        options = options.trusted_ca_pem(pem.clone());
    }
    if let Some(pool) = &pool {
        options = options.amqp_pool(pool.clone());
    }
    if fleet.identities.len() > 1 {
        crate::raise_descriptor_limit();
    }

    let devices = fleet.identities.len() as u64;
    let counters = Arc::new(Counters::default());
    let tty = std::io::stderr().is_terminal();
    let progress = tty.then(|| {
        tokio::spawn(stats::show_progress(
            counters.clone(),
            devices,
            devices.saturating_mul(args.count),
        ))
    });
    let memory_before = resident_bytes();

    // Connect.
    let started = Instant::now();
    let single = fleet.identities.len() == 1;
    let first_id = fleet
        .identities
        .first()
        .map(|i| i.device_id.clone())
        .unwrap_or_default();
    let (connected, connect_error): (Vec<(String, DeviceClient)>, Option<String>) = {
        let connecting = futures_util::stream::iter(fleet.identities)
            .map(|identity| connect(identity, options.clone()))
            .buffer_unordered(concurrency);
        let mut connecting = std::pin::pin!(connecting);
        let mut clients = Vec::new();
        let mut first_error = None;
        while let Some(result) = connecting.next().await {
            match result {
                Ok(client) => {
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                    clients.push(client);
                }
                Err(e) => {
                    counters.connect_failed.fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            if single {
                stop(progress);
                return Err(e);
            }
            // Devices that could not connect are reported at the end; the others run.
            (clients, Some(e))
        } else {
            (clients, None)
        }
    };
    let connect_time = started.elapsed();
    let memory_connected = resident_bytes();
    let connections = match &pool {
        Some(pool) => pool.connections().await as u64,
        None => counters.connected.load(Ordering::Relaxed),
    };

    // Send.
    let started = Instant::now();
    let plan = Arc::new(Plan {
        payload,
        count: args.count,
        rate: args.rate,
        in_flight: usize::try_from(args.in_flight).unwrap_or(usize::MAX),
        max_failures: args.max_failures,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (device_id, client)) in connected.iter().enumerate() {
        let (plan, counters, client, device_id) = (
            plan.clone(),
            counters.clone(),
            client.clone(),
            device_id.clone(),
        );
        tasks.spawn(async move {
            let outcome = send_all(&client, &device_id, index as u64, &plan, &counters).await;
            (device_id, outcome)
        });
    }
    let mut gave_up: Vec<(String, u64, String)> = Vec::new();
    let mut first_error: Option<(String, String)> = None;
    while let Some(joined) = tasks.join_next().await {
        let (device_id, outcome) = joined.map_err(|e| format!("a device task failed: {e}"))?;
        match outcome {
            Outcome::Done { first_error: None } => {}
            Outcome::Done {
                first_error: Some(e),
            } => {
                first_error.get_or_insert((device_id, e));
            }
            Outcome::GaveUp {
                in_a_row,
                last_error,
            } => gave_up.push((device_id, in_a_row, last_error)),
        }
    }
    let elapsed = started.elapsed();
    stop(progress);
    futures_util::stream::iter(connected)
        .for_each_concurrent(
            concurrency,
            |(_, client)| async move { client.close().await },
        )
        .await;

    let report = Report {
        transport: args.transport.name(),
        devices,
        connected: counters.connected.load(Ordering::Relaxed),
        connections,
        connect_time,
        acked: counters.acked.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
        elapsed,
        memory_before,
        memory_connected,
        counters: &counters,
    };
    match args.output {
        Output::Json => crate::print_line(&report.json().to_string())?,
        Output::Text if single => crate::print_line(&report.device_line(&first_id))?,
        Output::Text => crate::print_line(&report.fleet_line())?,
    }
    verdict(&args, &report, gave_up, first_error, connect_error)
}

/// The run's exit: an error when a device could not connect, gave up, or lost a message.
fn verdict(
    args: &SimulateArgs,
    report: &Report<'_>,
    mut gave_up: Vec<(String, u64, String)>,
    first_error: Option<(String, String)>,
    connect_error: Option<String>,
) -> Result<(), String> {
    let total = report.devices.saturating_mul(args.count);
    let (acked, failed) = (report.acked, report.failed);
    if !gave_up.is_empty() {
        gave_up.sort();
        let stopped = gave_up.len();
        let (device, in_a_row, last_error) = &gave_up[0];
        let head = if report.devices == 1 {
            format!("stopped after {in_a_row} messages in a row failed")
        } else {
            format!(
                "{stopped} of {} devices stopped after messages in a row failed, the first \
                 {device} after {in_a_row}",
                report.devices
            )
        };
        return Err(format!(
            "{head} (--max-failures {}): {acked} of {total} acknowledged, {failed} failed; \
             the last failure: {last_error}",
            args.max_failures,
        ));
    }
    if let Some(first) = connect_error {
        return Err(format!(
            "{} of {} devices could not connect; the first: {first}",
            report.devices - report.connected,
            report.devices
        ));
    }
    match first_error {
        None => Ok(()),
        Some((_, e)) if report.devices == 1 => {
            Err(format!("{failed} message(s) failed; the first: {e}"))
        }
        Some((device, e)) => Err(format!(
            "{failed} message(s) failed; the first, of {device}: {e}"
        )),
    }
}

fn stop(progress: Option<tokio::task::JoinHandle<()>>) {
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
}

/// The identities the arguments name.
async fn resolve(args: &SimulateArgs, concurrency: usize) -> Result<Fleet, String> {
    if let Some(path) = &args.connection_strings {
        return fleet::from_file(&args.hub, path);
    }
    if let Some(cs) = &args.device_connection_string {
        // A device connection string needs no service credentials.
        if args.devices.is_none() {
            return fleet::from_connection_string(&args.hub, cs);
        }
    }
    let hub = args.hub.resolve()?;
    match (args.devices, &args.device_id) {
        (Some(n), _) => {
            let n = usize::try_from(n).map_err(|_| "--devices is too large".to_owned())?;
            fleet::generated(hub, &args.device_prefix, n, concurrency).await
        }
        (None, Some(id)) => fleet::registered(hub, id).await,
        (None, None) => {
            Err("name the devices: --device-id, --devices or --connection-strings".into())
        }
    }
}

async fn connect(
    identity: Identity,
    options: ClientOptions,
) -> Result<(String, DeviceClient), String> {
    match DeviceClient::from_connection_string(&identity.connection_string, options).await {
        Ok(client) => Ok((identity.device_id, client)),
        Err(e) => Err(format!("device {}: {e}", identity.device_id)),
    }
}

/// What every device sends.
struct Plan {
    payload: Payload,
    count: u64,
    rate: Option<f64>,
    in_flight: usize,
    max_failures: u64,
}

/// How a device's run ended.
enum Outcome {
    /// Every message was sent; `first_error` is the first failure, if any.
    Done {
        /// The first failure's message.
        first_error: Option<String>,
    },
    /// `--max-failures` messages in a row failed: the device stopped early.
    GaveUp {
        /// How many failed in a row.
        in_a_row: u64,
        /// The last failure's message.
        last_error: String,
    },
}

/// Sends `plan.count` messages (at `plan.rate`, `plan.in_flight` at once), counting
/// acknowledgements and failures as they finish; stops early once `plan.max_failures`
/// finish failed in a row. Messages still in flight then are dropped, and a client never
/// sends a message whose caller dropped it.
async fn send_all(
    client: &DeviceClient,
    device_id: &str,
    seed: u64,
    plan: &Plan,
    counters: &Counters,
) -> Outcome {
    // After a stall (a slow acknowledgement), keep the rate instead of bursting to catch up.
    let pace = plan.rate.map(|r| {
        let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every
    });
    let count = plan.count;
    let ticks = futures_util::stream::unfold((0, pace), move |(i, mut pace)| async move {
        if i >= count {
            return None;
        }
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        Some((i, (i + 1, pace)))
    });
    let mut random = Random::new(seed);
    let mut results = std::pin::pin!(
        ticks
            .map(|i| {
                let client = client.clone();
                let body = plan.payload.render(device_id, i, &mut random);
                async move {
                    let started = Instant::now();
                    let message = Message::builder(body)
                        .content_type("application/json")
                        .content_encoding("utf-8")
                        .build()
                        .map_err(|e| e.to_string())?;
                    let result = client.send_event(message).await.map_err(|e| e.to_string());
                    Ok::<_, String>((result, started.elapsed()))
                }
            })
            .buffer_unordered(plan.in_flight)
    );
    let mut streak = FailureStreak::new(plan.max_failures);
    while let Some(finished) = results.next().await {
        let result = match finished {
            Ok((result, took)) => {
                counters.finished(result.is_ok(), took);
                result
            }
            Err(e) => {
                counters.finished(false, Duration::ZERO);
                Err(e)
            }
        };
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

/// A run's figures.
struct Report<'a> {
    transport: &'static str,
    devices: u64,
    connected: u64,
    connections: u64,
    connect_time: Duration,
    acked: u64,
    failed: u64,
    elapsed: Duration,
    memory_before: Option<u64>,
    memory_connected: Option<u64>,
    counters: &'a Counters,
}

impl Report<'_> {
    fn rate(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn latency(&self) -> String {
        match (
            self.counters.latency_at(0.5),
            self.counters.latency_at(0.99),
        ) {
            (Some(p50), Some(p99)) => {
                format!("; acknowledgement p50 {}, p99 {}", millis(p50), millis(p99))
            }
            _ => String::new(),
        }
    }

    /// The summary of a one-device run.
    fn device_line(&self, device_id: &str) -> String {
        format!(
            "device {device_id}: sent {}, acknowledged {}, failed {} in {:.2} s ({:.0} msgs/s){}",
            self.acked + self.failed,
            self.acked,
            self.failed,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.latency(),
        )
    }

    /// The summary of a fleet.
    fn fleet_line(&self) -> String {
        let memory = match (self.memory_before, self.memory_connected) {
            (Some(before), Some(after)) if self.connected > 0 => format!(
                ", {:.1} KiB of memory per device",
                after.saturating_sub(before) as f64 / 1024.0 / self.connected as f64
            ),
            _ => String::new(),
        };
        format!(
            "{} of {} devices connected over {} ({} connection(s)) in {:.2} s{memory}; \
             sent {}, acknowledged {}, failed {} in {:.2} s ({:.0} msgs/s){}",
            self.connected,
            self.devices,
            self.transport,
            self.connections,
            self.connect_time.as_secs_f64(),
            self.acked + self.failed,
            self.acked,
            self.failed,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.latency(),
        )
    }

    fn json(&self) -> serde_json::Value {
        let ms = |q: f64| {
            self.counters
                .latency_at(q)
                .map(|d| d.as_secs_f64() * 1000.0)
        };
        json!({
            "transport": self.transport,
            "devices": self.devices,
            "connected": self.connected,
            "connect_failed": self.devices - self.connected,
            "connections": self.connections,
            "connect_seconds": self.connect_time.as_secs_f64(),
            "sent": self.acked + self.failed,
            "acknowledged": self.acked,
            "failed": self.failed,
            "send_seconds": self.elapsed.as_secs_f64(),
            "msgs_per_second": self.rate(),
            "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": ms(1.0)},
            "rss_bytes": {"before_connect": self.memory_before, "connected": self.memory_connected},
        })
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
