//! `azure-iot`: the IoT Hub emulator and IoT Hub tools on the command line.
//!
//! `azure-iot hub start` runs the emulator until Ctrl-C (or SIGTERM), printing where it listens,
//! the CA to trust and the `iothubowner` connection string; `ca.pem` and `hub.json` in the data
//! directory carry the same facts for scripts. `azure-iot hub monitor-events` reads telemetry
//! from the Event Hubs-compatible endpoint of the emulator (found through those files) or of
//! any hub (`monitor_events.rs`); `monitor-feedback` watches a running emulator.
//!
//! The `az iot`-style commands (`device`, `twin`, `method`, `c2d`, `query`, `configuration`) use the service
//! client (`azure_iot_service`) against any hub: `--connection-string` or
//! `IOTHUB_CONNECTION_STRING`, else the local emulator's `hub.json` (see `target.rs`).
//! `dps` does the same for the Device Provisioning Service with the provisioning service
//! client (`PROVISIONING_CONNECTION_STRING`, else the emulator's DPS; see `dps/mod.rs`).
//! `hub ca` and `dps ca` manage the running emulator's registered CA certificates (`ca.rs`;
//! the DPS's registry is emulator-only, as Azure keeps it in the management plane).
//! `device simulate` drives this project's device client. `quickstart` runs everything
//! against an embedded emulator. Errors are one line on stderr and exit status 1.
// A command-line tool's output is its product.
#![allow(clippy::print_stdout)]

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

mod ca;
mod calls;
mod configurations;
mod connect;
mod devices;
mod dps;
mod export_import;
mod files;
mod jobs;
mod monitor;
mod monitor_events;
mod provision;
mod quickstart;
mod simulate;
mod target;
mod twins;
mod upload;

use azure_iot_emulator::{
    CA_FILE, Durability, Emulator, FileUploadOptions, HUB_FILE, Limits, TlsSource,
};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "azure-iot",
    version,
    about = "Azure IoT Hub emulator and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The local IoT Hub emulator.
    #[command(subcommand)]
    Hub(HubCommand),
    /// Device and module identities.
    #[command(subcommand)]
    Device(devices::DeviceCommand),
    /// Device and module twins.
    #[command(subcommand)]
    Twin(twins::TwinCommand),
    /// Direct methods.
    #[command(subcommand)]
    Method(calls::MethodCommand),
    /// Cloud-to-device messages.
    #[command(subcommand)]
    C2d(calls::C2dCommand),
    /// Run an IoT Hub query and print one JSON item per line.
    Query(twins::QueryArgs),
    /// Jobs: twin updates and direct methods scheduled on many devices.
    #[command(subcommand)]
    Job(jobs::JobCommand),
    /// Automatic device management configurations.
    #[command(subcommand)]
    Configuration(configurations::ConfigurationCommand),
    /// The Device Provisioning Service: enrollments, enrollment groups, registration states.
    #[command(subcommand)]
    Dps(dps::DpsCommand),
    /// See the whole system work: an embedded hub, a device and a back end, end to end.
    Quickstart,
}

#[derive(Subcommand)]
enum HubCommand {
    /// Start the emulator and serve until Ctrl-C.
    Start(Box<StartArgs>),
    /// Print device-to-cloud messages read from the hub's Event Hubs-compatible endpoint.
    MonitorEvents(Box<monitor_events::MonitorArgs>),
    /// Print (and complete) cloud-to-device delivery feedback.
    MonitorFeedback(monitor::FeedbackArgs),
    /// Print (and complete) file-upload notifications.
    MonitorFileNotifications(monitor::FileNotificationArgs),
    /// CA certificates for devices that authenticate with CA-signed X.509 certificates.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Files devices uploaded to the emulator's blob endpoint.
    #[command(subcommand)]
    Files(files::FilesCommand),
    /// Print a container SAS URI on the emulator's blob endpoint (for device export/import).
    ContainerSas(export_import::ContainerSasArgs),
}

#[derive(Args)]
struct StartArgs {
    /// Directory for state (hub.db), the CA (ca.pem) and hub.json.
    #[arg(long, env = "AZURE_IOT_HUB_DATA_DIR", default_value = ".azure-iot-hub")]
    data_dir: PathBuf,
    /// Host name of the hub: in connection strings and the server certificate.
    #[arg(long, default_value = "localhost")]
    hostname: String,
    /// Host name of the Device Provisioning Service (served on the same ports): its service
    /// API's token audience, also in the server certificate. Default: the hub's host name
    /// (DPS traffic is told apart by what the client sends); a distinct name must resolve to
    /// the emulator.
    #[arg(long)]
    dps_hostname: Option<String>,
    /// Seconds DPS tells registering devices to wait before polling (retry-after).
    #[arg(long, default_value_t = 1)]
    dps_retry_after: u32,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// HTTPS port: service REST API and WebSocket upgrades (0 = any free port).
    #[arg(long, default_value_t = 443)]
    https_port: u16,
    /// MQTT-over-TLS port for devices (0 = any free port).
    #[arg(long, default_value_t = 8883)]
    mqtt_port: u16,
    /// AMQP-over-TLS port for services (cloud-to-device, feedback) (0 = any free port).
    #[arg(long, default_value_t = 5671)]
    amqp_port: u16,
    /// Blob endpoint port for file uploads, its own TLS port (0 = any free port). Default:
    /// 10000, or a free port when --https-port is 0.
    #[arg(long)]
    blob_port: Option<u16>,
    #[command(flatten)]
    file_upload: FileUploadArgs,
    /// Keep hub state in memory only (ca.pem and hub.json are still written).
    #[arg(long)]
    in_memory: bool,
    /// Server certificate chain (PEM) to use instead of a generated one.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that clients should trust with --tls-cert; written as ca.pem.
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Partitions of the telemetry log (1-128; a new log gets 4). Fixed once the log exists.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=128))]
    partitions: Option<u32>,
    /// A consumer group of the Event Hubs-compatible endpoint besides `$Default` (repeat for
    /// more; at most 20 in all).
    #[arg(long = "consumer-group", value_name = "NAME")]
    consumer_groups: Vec<String>,
    /// Hub notifications routed to the Event Hubs-compatible endpoint, as an IoT Hub route
    /// with their source would: `all`, `none` (the default) or a comma-separated list of
    /// `twin-change`, `lifecycle`, `connection-state`.
    #[arg(long, value_name = "SOURCES", default_value = "none", value_parser = parse_event_routes)]
    route_events: azure_iot_emulator::EventRoutes,
    /// Telemetry older than this many hours is deleted from the log.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..))]
    telemetry_retention_hours: u64,
    /// The oldest telemetry is deleted while the log holds more than this many MiB of messages.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    telemetry_max_mb: u64,
    /// How far acknowledged writes are durable: `process` (synchronous=NORMAL: they survive
    /// a crash or kill -9 of the emulator) or `full` (synchronous=FULL: they also survive an
    /// OS crash or power loss; one fsync per write).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Process)]
    durability: DurabilityArg,
    #[command(flatten)]
    limits: LimitArgs,
}

/// The hub's file-upload settings (defaults: `azure_iot_emulator::FileUploadOptions`).
#[derive(Args)]
#[command(next_help_heading = "File upload")]
struct FileUploadArgs {
    /// How long the blob SAS URI handed to a device is valid, in minutes (1 to 1440).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=1440))]
    file_upload_sas_ttl_minutes: u64,
    /// Do not put a notification on /messages/serviceBound/filenotifications when a device
    /// completes an upload.
    #[arg(long)]
    no_file_notifications: bool,
    /// How long a file notification handed to a service stays locked, in seconds (5 to 300).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=300))]
    file_notification_lock_seconds: u64,
    /// Deliveries of a file notification before it is dropped (1 to 100).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    file_notification_max_delivery_count: u32,
    /// Send file uploads to this storage account (a real one or Azurite) instead of the
    /// built-in blob endpoint: `DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…;
    /// BlobEndpoint=https://…`. A secret: prefer the environment variable.
    #[arg(
        long,
        env = "AZURE_IOT_STORAGE_CONNECTION_STRING",
        hide_env_values = true
    )]
    storage_connection_string: Option<String>,
    /// The storage account's container uploads go to (created at start-up if missing).
    #[arg(long, default_value = azure_iot_emulator::DEFAULT_STORAGE_CONTAINER, requires = "storage_connection_string")]
    storage_container: String,
}

impl FileUploadArgs {
    fn options(&self) -> FileUploadOptions {
        FileUploadOptions {
            sas_ttl: std::time::Duration::from_secs(self.file_upload_sas_ttl_minutes * 60),
            notifications: !self.no_file_notifications,
            lock_duration: std::time::Duration::from_secs(self.file_notification_lock_seconds),
            max_delivery_count: self.file_notification_max_delivery_count,
        }
    }

    /// The storage account uploads go to, if one is given.
    fn storage(&self) -> Result<Option<azure_iot_emulator::StorageAccount>, String> {
        self.storage_connection_string
            .as_deref()
            .map(|cs| {
                azure_iot_emulator::StorageAccount::from_connection_string(cs)
                    .and_then(|a| a.with_container(&self.storage_container))
                    .map_err(|e| e.to_string())
            })
            .transpose()
    }
}

/// `--durability`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum DurabilityArg {
    Process,
    Full,
}

/// Connection limits and timeouts of `hub start` (defaults: `azure_iot_emulator::Limits`).
#[derive(Args)]
#[command(next_help_heading = "Connection limits and timeouts (seconds)")]
struct LimitArgs {
    /// Open connections per listener (HTTPS, MQTT, AMQP, blob); more are closed at once.
    /// Default: (open-file limit - 128) / 5 (the blob endpoint counts twice: its connections
    /// hold files too).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    max_connections: Option<u64>,
    /// TLS handshake, from the TCP accept.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    handshake_timeout: u64,
    /// From the TLS handshake to an authenticated session (MQTT CONNECT; AMQP header, SASL,
    /// open and first token).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    connect_timeout: u64,
    /// HTTP request headers, from the handshake or the previous response (idle keep-alives).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    http_idle_timeout: u64,
    /// A whole HTTP request body, from its headers.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout: u64,
    /// CBS tokens one AMQP connection may hold (devices multiplexed on it, the service);
    /// IoT Hub allows 999.
    #[arg(long, default_value_t = 999, value_parser = clap::value_parser!(u64).range(1..=65_535))]
    max_amqp_tokens: u64,
    /// A write the client does not read (its receive window stays full).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    write_timeout: u64,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        let secs = std::time::Duration::from_secs;
        Limits {
            max_connections: self
                .max_connections
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            handshake_timeout: secs(self.handshake_timeout),
            connect_timeout: secs(self.connect_timeout),
            http_idle_timeout: secs(self.http_idle_timeout),
            body_timeout: secs(self.body_timeout),
            write_timeout: secs(self.write_timeout),
            max_amqp_tokens: usize::try_from(self.max_amqp_tokens).unwrap_or(usize::MAX),
        }
    }
}

/// Raises this process's soft open-file limit towards its hard limit (as Go's runtime and
/// many servers do): the default soft limit of 1024 is far below what the emulator can
/// serve, and the per-listener connection limit is derived from it. At most 2^20 + 1024
/// (what the largest derived limit needs), and 10,240 where the hard limit is "unlimited"
/// (macOS refuses more than `OPEN_MAX` then, as Go also allows for).
#[cfg(unix)]
pub(crate) fn raise_descriptor_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    const MOST: u64 = (1 << 20) * 3 + 1024;
    let limit = getrlimit(Resource::Nofile);
    let target = limit.maximum.unwrap_or(10_240).min(MOST);
    if limit.current.is_some_and(|current| current >= target) {
        return;
    }
    if let Err(e) = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        },
    ) {
        tracing::debug!(error = %e, "could not raise the open-file limit");
    }
}

#[cfg(not(unix))]
pub(crate) fn raise_descriptor_limit() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The emulator logs what it does; the other commands' output is their answer.
    let default_filter = match cli.command {
        Command::Hub(HubCommand::Start(_)) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AZURE_IOT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Hub(HubCommand::Start(args)) => hub_start(*args).await,
            Command::Hub(HubCommand::MonitorEvents(args)) => {
                monitor_events::monitor_events(*args).await
            }
            Command::Hub(HubCommand::MonitorFeedback(args)) => {
                monitor::monitor_feedback(args).await
            }
            Command::Hub(HubCommand::MonitorFileNotifications(args)) => {
                monitor::monitor_file_notifications(args).await
            }
            Command::Hub(HubCommand::Ca(command)) => ca::run(ca::Registry::Hub, command).await,
            Command::Hub(HubCommand::Files(command)) => files::run(command).await,
            Command::Hub(HubCommand::ContainerSas(args)) => {
                export_import::container_sas(args).await
            }
            Command::Device(command) => devices::run(command).await,
            Command::Twin(command) => twins::run(command).await,
            Command::Method(command) => calls::method(command).await,
            Command::C2d(command) => calls::c2d(command).await,
            Command::Query(args) => twins::query(args).await,
            Command::Job(command) => jobs::run(command).await,
            Command::Configuration(command) => configurations::run(command).await,
            Command::Dps(command) => dps::run(command).await,
            Command::Quickstart => quickstart::run().await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // One line, whatever the message quotes (a host name with a line break, a body).
            let one_line: Vec<&str> = message.lines().map(str::trim).collect();
            eprintln!("error: {}", one_line.join(" "));
            ExitCode::FAILURE
        }
    }
}

async fn hub_start(args: StartArgs) -> Result<(), String> {
    raise_descriptor_limit();
    let limits = args.limits.limits();
    let mut builder = Emulator::builder();
    if let Some(dps_hostname) = &args.dps_hostname {
        builder = builder.dps_hostname(dps_hostname);
    }
    let mut builder = builder
        .limits(limits)
        .durability(match args.durability {
            DurabilityArg::Process => Durability::Process,
            DurabilityArg::Full => Durability::Full,
        })
        .hostname(&args.hostname)
        .dps_retry_after(args.dps_retry_after)
        .data_dir(&args.data_dir)
        .in_memory(args.in_memory)
        .bind_address(args.bind)
        .https_port(args.https_port)
        .mqtt_port(args.mqtt_port)
        .amqp_port(args.amqp_port)
        .file_upload(args.file_upload.options())
        .telemetry_retention(std::time::Duration::from_secs(
            args.telemetry_retention_hours.saturating_mul(3600),
        ))
        .telemetry_max_bytes(args.telemetry_max_mb.saturating_mul(1024 * 1024));
    if let Some(partitions) = args.partitions {
        builder = builder.partitions(partitions);
    }
    if let Some(port) = args.blob_port {
        builder = builder.blob_port(port);
    }
    if let Some(storage) = args.file_upload.storage()? {
        builder = builder.storage(storage);
    }
    for group in args.consumer_groups {
        builder = builder.consumer_group(group);
    }
    builder = builder.event_routes(args.route_events);
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        builder = builder.tls(TlsSource::Files {
            cert,
            key,
            ca: args.tls_ca,
        });
    }
    let hub = builder.start().await.map_err(|e| e.to_string())?;
    let dir = std::fs::canonicalize(&args.data_dir).unwrap_or(args.data_dir);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "IoT Hub emulator running\n  hostname:  {}\n  https:     {}\n  mqtt:      {}\n  amqp:      {}\n  blob:      {}  (file uploads)\n  state:     {}\n  telemetry: {} partitions\n  limits:    {} connections per listener\n  CA:        {}  (trust this certificate)\n  hub.json:  {}\n  DPS:       {} (id scope {}, same ports)\n  Event Hubs-compatible endpoint: entity {} on the AMQP port, consumer groups {} (connection strings in hub.json)\n\niothubowner connection string:\n  {}\n\nPress Ctrl-C to stop.",
        hub.hostname(),
        hub.https_addr(),
        hub.mqtt_addr(),
        hub.amqp_addr(),
        hub.blob_addr(),
        if args.in_memory {
            "in memory".to_owned()
        } else {
            dir.display().to_string()
        },
        hub.telemetry_partitions(),
        limits.effective_max_connections(),
        dir.join(CA_FILE).display(),
        dir.join(HUB_FILE).display(),
        hub.dps_hostname(),
        hub.dps_id_scope(),
        hub.event_hubs_name(),
        hub.event_hubs_consumer_groups().join(", "),
        hub.owner_connection_string(),
    );
    let _ = out.flush();
    drop(out);
    wait_for_stop().await;
    tracing::info!("stopping");
    hub.shutdown().await;
    Ok(())
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    print_line(&text)
}

/// Prints one line on stdout; a closed pipe (`| head`) is not an error worth a message.
pub(crate) fn print_line(text: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(format!("cannot write to stdout: {e}")),
    }
}

/// Ctrl-C, or SIGTERM on Unix.
/// `--route-events`: the sources, or the emulator's explanation of a bad name.
fn parse_event_routes(text: &str) -> Result<azure_iot_emulator::EventRoutes, String> {
    text.parse()
        .map_err(|e: azure_iot_emulator::EmulatorError| e.to_string())
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
