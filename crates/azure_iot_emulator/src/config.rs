//! Emulator configuration, and the `hub.json` file other tools read.
//!
//! `hub.json` (in the data directory, readable by its owner only because it holds keys):
//!
//! ```json
//! {"hostname": "localhost",
//!  "ports": {"https": 443, "mqtt": 8883, "amqp": 5671, "blob": 10000},
//!  "blob": {"endpoint": "https://localhost:10000", "container": "fileuploads"},
//!  "connection_strings": {"iothubowner": "HostName=...", "service": "...", "registryRead": "...",
//!                         "registryReadWrite": "...", "device": "..."},
//!  "dps": {"id_scope": "0ne0A1B2C3D", "hostname": "localhost",
//!          "global_endpoint": "localhost:443",
//!          "connection_string": "HostName=localhost;SharedAccessKeyName=provisioningserviceowner;..."},
//!  "event_hubs": {"endpoint": "sb://localhost/", "port": 5671, "entity_path": "localhost",
//!                 "partitions": 4, "consumer_groups": ["$Default"],
//!                 "connection_string": "Endpoint=sb://localhost/;SharedAccessKeyName=service;SharedAccessKey=...;EntityPath=localhost",
//!                 "connection_strings": {"iothubowner": "Endpoint=...", "service": "Endpoint=..."},
//!                 "routed_sources": ["twinChangeEvents", "deviceLifecycleEvents",
//!                                    "deviceConnectionStateEvents"]}}
//! ```
//!
//! Together with `ca.pem` this
//! is the contract scripts and the conformance suite rely on: keep names and shape.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::error::EmulatorError;
pub use crate::hub::routed::EventRoutes;
use crate::telemetry::{MAX_PARTITIONS, Retention, TelemetryOptions};
use crate::tls::{TlsSource, write_private};

/// The file describing a running emulator, in the data directory.
pub const HUB_FILE: &str = "hub.json";

/// The IoT Hub HTTPS port the official SDKs dial.
pub const DEFAULT_HTTPS_PORT: u16 = 443;

/// The IoT Hub MQTT-over-TLS port the official SDKs dial.
pub const DEFAULT_MQTT_PORT: u16 = 8883;

/// The IoT Hub AMQP-over-TLS port the official SDKs dial.
pub const DEFAULT_AMQP_PORT: u16 = 5671;

/// The blob endpoint's default port (Azurite's and the storage emulator's blob port).
pub const DEFAULT_BLOB_PORT: u16 = 10000;

/// Configures and starts an emulator; see [`crate::Emulator::builder`].
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    hostname: String,
    data_dir: Option<PathBuf>,
    in_memory: bool,
    bind: IpAddr,
    https_port: u16,
    mqtt_port: u16,
    amqp_port: u16,
    tls: TlsSource,
    telemetry: TelemetryOptions,
    limits: Limits,
    durability: Durability,
    blob_port: Option<u16>,
    file_upload: FileUploadOptions,
    storage: Option<crate::blob::StorageAccount>,
    dps_hostname: Option<String>,
    dps_retry_after: u32,
    dps_webhook_timeout: Duration,
    consumer_groups: Vec<String>,
    event_routes: EventRoutes,
}

/// How far an acknowledged write (telemetry, twin, C2D, registry) is durable.
///
/// Both modes keep the databases in SQLite's WAL mode; they differ in when the WAL is flushed
/// to the disk (`fsync`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL` (the default): a write is in the WAL file before it is
    /// acknowledged, so it survives a crash or `kill -9` of the emulator; the WAL is flushed
    /// to the disk at checkpoints, so an operating-system crash or power loss can lose the
    /// last acknowledged writes (never corrupt the database).
    #[default]
    Process,
    /// `synchronous=FULL`: the WAL is flushed to the disk before each write is acknowledged,
    /// so acknowledged writes also survive an operating-system crash or power loss, at the
    /// cost of one `fsync` per transaction (see BENCHMARKS.md).
    Full,
}

impl Durability {
    /// SQLite's `synchronous` setting for this mode.
    pub(crate) fn synchronous(self) -> &'static str {
        match self {
            Self::Process => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// How long a client may take and how many connections it may hold: the bounds that keep
/// careless and hostile clients from exhausting the emulator. Every deadline closes the
/// connection when it passes; none applies to a well-behaved client at work.
///
/// | bound | default | what it covers |
/// |-------|---------|----------------|
/// | [`max_connections`](Self::max_connections) | from the descriptor limit | open connections per listener (HTTPS, MQTT, AMQP); more are accepted and closed at once |
/// | [`handshake_timeout`](Self::handshake_timeout) | 10 s | the TLS handshake, from the TCP accept |
/// | [`connect_timeout`](Self::connect_timeout) | 10 s | from the handshake (or WebSocket upgrade) to an authenticated session: the MQTT CONNECT; the AMQP header, SASL, open and first token |
/// | [`http_idle_timeout`](Self::http_idle_timeout) | 30 s | an HTTP connection's request headers, from the handshake or the previous response: idle keep-alives and slow headers |
/// | [`body_timeout`](Self::body_timeout) | 30 s | a whole HTTP request body, from its headers |
/// | [`write_timeout`](Self::write_timeout) | 30 s | a write the client does not read: a connection whose send buffer stays full this long |
/// | [`max_amqp_tokens`](Self::max_amqp_tokens) | 999 | CBS tokens (audiences: devices multiplexed, the service) one AMQP connection may hold, IoT Hub's limit |
///
/// An authenticated MQTT connection is bounded by its keep-alive (1.5 times it, at most
/// 1177 s as on IoT Hub); with keep-alive 0 it is held until it closes, as on the hub. An
/// authenticated AMQP connection lives as long as one of its tokens holds (see ADR 10 for why
/// no AMQP `idle-time-out` is advertised).
///
/// Timeouts are at most [`Limits::MAX_TIMEOUT`]; connection limits at most
/// [`Limits::MAX_CONNECTIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections per listener. `None` (the default) derives it from the process's
    /// file-descriptor limit at start: a third of what is left after a reserve for the
    /// emulator's own files, so that a flood on one port cannot starve the others (see
    /// [`Limits::derived_max_connections`]).
    pub max_connections: Option<usize>,
    /// The TLS handshake, from the TCP accept.
    pub handshake_timeout: Duration,
    /// From the end of the TLS handshake (or of a WebSocket upgrade) to an authenticated
    /// session.
    pub connect_timeout: Duration,
    /// The wait for an HTTP request's headers, from the handshake or the previous response.
    pub http_idle_timeout: Duration,
    /// The whole body of an HTTP request, from its headers.
    pub body_timeout: Duration,
    /// How long a connection's writes may stay blocked on a client that does not read.
    pub write_timeout: Duration,
    /// CBS tokens one AMQP connection may hold at once (each grants one audience: a device
    /// or module multiplexed on the connection, or the hub for the service links). A
    /// put-token beyond it is answered 403. IoT Hub allows 999.
    pub max_amqp_tokens: usize,
}

/// Descriptors kept for the emulator's own files (state and telemetry databases, their
/// readers, certificates) when the connection limit is derived.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Shares of the derived descriptor budget: one each for the HTTPS, MQTT and AMQP listeners,
/// two for the blob endpoint (each of its connections may hold an open blob file too).
const LISTENERS: u64 = 5;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: None,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_amqp_tokens: Self::DEFAULT_AMQP_TOKENS,
        }
    }
}

impl Limits {
    /// IoT Hub's limit on the tokens one AMQP connection may hold.
    pub const DEFAULT_AMQP_TOKENS: usize = 999;

    /// The longest timeout accepted (a day): longer ones are configuration errors.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

    /// The most connections per listener accepted (and derived, where the descriptor limit
    /// is unlimited or huge).
    pub const MAX_CONNECTIONS: usize = 1 << 20;

    /// The per-listener connection limit [`max_connections`](Self::max_connections) `None`
    /// stands for, from a descriptor limit: `(limit - 128) / 5`, at least 16 and at most
    /// [`MAX_CONNECTIONS`](Self::MAX_CONNECTIONS). With the common `ulimit -n 1024` that is
    /// 179 per listener, so the four listeners together (the blob endpoint's connections
    /// counted twice, for their open files) cannot exhaust the process's descriptors.
    pub fn derived_max_connections(descriptor_limit: u64) -> usize {
        let per_listener = descriptor_limit.saturating_sub(RESERVED_DESCRIPTORS) / LISTENERS;
        usize::try_from(per_listener)
            .unwrap_or(usize::MAX)
            .clamp(16, Self::MAX_CONNECTIONS)
    }

    /// The per-listener connection limit in force: the configured one, or the one derived
    /// from this process's current (soft) descriptor limit.
    pub fn effective_max_connections(&self) -> usize {
        self.max_connections
            .unwrap_or_else(|| Self::derived_max_connections(descriptor_limit()))
    }

    fn validate(&self) -> Result<(), EmulatorError> {
        if let Some(n) = self.max_connections
            && !(1..=Self::MAX_CONNECTIONS).contains(&n)
        {
            return Err(EmulatorError::Config(format!(
                "the connection limit must be 1 to {}, not {n}",
                Self::MAX_CONNECTIONS
            )));
        }
        if !(1..=65_535).contains(&self.max_amqp_tokens) {
            return Err(EmulatorError::Config(format!(
                "the AMQP token limit must be 1 to 65,535, not {}",
                self.max_amqp_tokens
            )));
        }
        let timeouts = [
            ("handshake", self.handshake_timeout),
            ("connect", self.connect_timeout),
            ("HTTP idle", self.http_idle_timeout),
            ("body", self.body_timeout),
            ("write", self.write_timeout),
        ];
        for (name, timeout) in timeouts {
            if timeout.is_zero() || timeout > Self::MAX_TIMEOUT {
                return Err(EmulatorError::Config(format!(
                    "the {name} timeout must be more than zero and at most a day, not {timeout:?}"
                )));
            }
        }
        Ok(())
    }
}

/// This process's soft limit on open file descriptors (4096 where it cannot be read).
#[cfg(unix)]
fn descriptor_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// This process's limit on open handles: Windows has no small per-process default to derive
/// from, so a fixed budget stands in.
#[cfg(not(unix))]
fn descriptor_limit() -> u64 {
    4096
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        Self {
            hostname: "localhost".to_owned(),
            data_dir: None,
            in_memory: false,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            https_port: DEFAULT_HTTPS_PORT,
            mqtt_port: DEFAULT_MQTT_PORT,
            amqp_port: DEFAULT_AMQP_PORT,
            tls: TlsSource::Generated,
            telemetry: TelemetryOptions::default(),
            limits: Limits::default(),
            durability: Durability::default(),
            blob_port: None,
            file_upload: FileUploadOptions::default(),
            storage: None,
            dps_hostname: None,
            dps_retry_after: 1,
            dps_webhook_timeout: Duration::from_secs(5),
            consumer_groups: Vec::new(),
            event_routes: EventRoutes::none(),
        }
    }
}

pub(crate) struct Config {
    pub(crate) hostname: String,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) in_memory: bool,
    pub(crate) https_addr: SocketAddr,
    pub(crate) mqtt_addr: SocketAddr,
    pub(crate) amqp_addr: SocketAddr,
    pub(crate) blob_addr: SocketAddr,
    pub(crate) file_upload: FileUploadOptions,
    /// The storage account file uploads go to instead of the built-in endpoint (ADR 25).
    pub(crate) storage: Option<crate::blob::StorageAccount>,
    pub(crate) tls: TlsSource,
    pub(crate) telemetry: TelemetryOptions,
    pub(crate) limits: Limits,
    pub(crate) durability: Durability,
    pub(crate) dps_hostname: String,
    pub(crate) dps_retry_after: u32,
    pub(crate) dps_webhook_timeout: Duration,
    /// The Event Hubs-compatible endpoint's consumer groups besides `$Default`.
    pub(crate) consumer_groups: Vec<String>,
    /// The hub notifications routed to the built-in endpoint.
    pub(crate) event_routes: EventRoutes,
}

impl EmulatorBuilder {
    /// The hub's host name: used in connection strings, token audiences and the server
    /// certificate. Default `localhost`.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }

    /// Where state (`hub.db`), the CA and `hub.json` live. Without one, nothing is written.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Keep hub state in memory only, even with a data directory (which then still receives
    /// `ca.pem` and `hub.json`, so clients can find and trust the emulator).
    pub fn in_memory(mut self, in_memory: bool) -> Self {
        self.in_memory = in_memory;
        self
    }

    /// The address to listen on. Default `127.0.0.1`.
    pub fn bind_address(mut self, address: IpAddr) -> Self {
        self.bind = address;
        self
    }

    /// The HTTPS port (REST API and WebSocket upgrades). Default 443; 0 picks a free port.
    pub fn https_port(mut self, port: u16) -> Self {
        self.https_port = port;
        self
    }

    /// The MQTT-over-TLS port. Default 8883; 0 picks a free port.
    pub fn mqtt_port(mut self, port: u16) -> Self {
        self.mqtt_port = port;
        self
    }

    /// The AMQP-over-TLS port (service C2D and feedback). Default 5671; 0 picks a free port.
    pub fn amqp_port(mut self, port: u16) -> Self {
        self.amqp_port = port;
        self
    }

    /// Use these certificates instead of generated ones.
    pub fn tls(mut self, tls: TlsSource) -> Self {
        self.tls = tls;
        self
    }

    /// Adds a consumer group to the Event Hubs-compatible endpoint (it always has
    /// `$Default`): 1 to 50 letters, digits, `.`, `-` and `_`, starting and ending with a
    /// letter or digit; at most 20 in all. Names are compared case-insensitively.
    pub fn consumer_group(mut self, name: impl Into<String>) -> Self {
        self.consumer_groups.push(name.into());
        self
    }

    /// Which of the hub's own notifications (twin change, device lifecycle, connection
    /// state) go to the built-in Event Hubs-compatible endpoint, as an IoT Hub route with
    /// that source and the `events` endpoint sends them. Default: none, as on a new hub.
    pub fn event_routes(mut self, routes: EventRoutes) -> Self {
        self.event_routes = routes;
        self
    }

    /// The telemetry log's partition count, 1 to 128 (a new hub's built-in endpoint has 4, the
    /// default). It is fixed when the log is created: a data directory whose log has another
    /// count refuses to start. Unset, an existing log keeps its count.
    pub fn partitions(mut self, count: u32) -> Self {
        self.telemetry.partitions = Some(count);
        self
    }

    /// Telemetry older than this is deleted from the log. Default 24 hours (IoT Hub's default
    /// retention).
    pub fn telemetry_retention(mut self, max_age: std::time::Duration) -> Self {
        self.telemetry.retention.max_age = max_age;
        self
    }

    /// The oldest telemetry is deleted while the log holds more than this many bytes of
    /// messages (body, properties and ids; trimmed to 90 % of it). Default 256 MiB.
    pub fn telemetry_max_bytes(mut self, max_bytes: u64) -> Self {
        self.telemetry.retention.max_bytes = max_bytes;
        self
    }

    /// Connection limits and timeouts; see [`Limits`] for the defaults.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How far acknowledged writes are durable; see [`Durability`]. Default
    /// [`Durability::Process`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self.telemetry.durability = durability;
        self
    }

    /// The port of the built-in blob endpoint that file uploads go to (its own TLS port).
    /// Default 10000, or a free port when the HTTPS port is 0; 0 picks a free port.
    pub fn blob_port(mut self, port: u16) -> Self {
        self.blob_port = Some(port);
        self
    }

    /// The hub's file-upload settings; see [`FileUploadOptions`] for the defaults.
    pub fn file_upload(mut self, options: FileUploadOptions) -> Self {
        self.file_upload = options;
        self
    }

    /// Sends file uploads to a storage account (a real one or Azurite) instead of the built-in
    /// blob endpoint: devices get a SAS signed with that account's key for its blob endpoint
    /// and container, which the emulator creates at start-up if it is missing (ADR 25).
    pub fn storage(mut self, account: crate::blob::StorageAccount) -> Self {
        self.storage = Some(account);
        self
    }

    /// The Device Provisioning Service's host name (its service API's token audience, and a
    /// name the server certificate covers). Default: the hub's host name, which resolves
    /// wherever the hub's does; DPS traffic is then told from hub traffic by what the client
    /// sends (`crate::route`). A distinct name must resolve to the emulator on the clients'
    /// machines (an `/etc/hosts` entry, or the clients' `connect_address`).
    pub fn dps_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.dps_hostname = Some(hostname.into());
        self
    }

    /// The seconds DPS tells a registering device to wait before it polls (`retry-after`).
    /// Default 1; 0 makes tests fast.
    pub fn dps_retry_after(mut self, seconds: u32) -> Self {
        self.dps_retry_after = seconds;
        self
    }

    /// How long DPS waits for a custom allocation webhook. Default 5 s.
    pub fn dps_webhook_timeout(mut self, timeout: Duration) -> Self {
        self.dps_webhook_timeout = timeout;
        self
    }

    pub(crate) fn into_config(self) -> Result<Config, EmulatorError> {
        let hostname = valid_hostname(&self.hostname)?;
        let dps_hostname = match &self.dps_hostname {
            Some(name) => valid_hostname(name)?,
            None => hostname.clone(),
        };
        if let Some(n) = self.telemetry.partitions
            && !(1..=MAX_PARTITIONS).contains(&n)
        {
            return Err(EmulatorError::Config(format!(
                "the partition count must be 1 to {MAX_PARTITIONS}, not {n}"
            )));
        }
        let Retention { max_age, max_bytes } = self.telemetry.retention;
        if max_age.is_zero() || max_bytes == 0 {
            return Err(EmulatorError::Config(
                "telemetry retention (age and size) must be more than zero".into(),
            ));
        }
        self.limits.validate()?;
        self.file_upload.validate()?;
        validate_consumer_groups(&self.consumer_groups)?;
        let blob_port = self.blob_port.unwrap_or(if self.https_port == 0 {
            0
        } else {
            DEFAULT_BLOB_PORT
        });
        Ok(Config {
            hostname,
            data_dir: self.data_dir,
            in_memory: self.in_memory,
            https_addr: SocketAddr::new(self.bind, self.https_port),
            mqtt_addr: SocketAddr::new(self.bind, self.mqtt_port),
            amqp_addr: SocketAddr::new(self.bind, self.amqp_port),
            blob_addr: SocketAddr::new(self.bind, blob_port),
            file_upload: self.file_upload,
            storage: self.storage,
            tls: self.tls,
            telemetry: self.telemetry,
            limits: self.limits,
            durability: self.durability,
            dps_hostname,
            dps_retry_after: self.dps_retry_after,
            dps_webhook_timeout: self.dps_webhook_timeout,
            consumer_groups: self.consumer_groups,
            event_routes: self.event_routes,
        })
    }
}

/// Checks the configured consumer groups: valid names, at most
/// [`MAX_CONSUMER_GROUPS`](crate::amqp::eventhubs::MAX_CONSUMER_GROUPS) with `$Default`.
fn validate_consumer_groups(groups: &[String]) -> Result<(), EmulatorError> {
    use crate::amqp::eventhubs::{MAX_CONSUMER_GROUPS, valid_consumer_group};
    if let Some(bad) = groups.iter().find(|g| !valid_consumer_group(g)) {
        return Err(EmulatorError::Config(format!(
            "`{bad}` is not a valid consumer group name: 1 to 50 letters, digits, '.', '-' and '_', starting and ending with a letter or digit"
        )));
    }
    let mut distinct: Vec<String> = vec!["$default".to_owned()];
    for group in groups {
        let lower = group.to_ascii_lowercase();
        if !distinct.contains(&lower) {
            distinct.push(lower);
        }
    }
    if distinct.len() > MAX_CONSUMER_GROUPS {
        return Err(EmulatorError::Config(format!(
            "the Event Hubs-compatible endpoint may have {MAX_CONSUMER_GROUPS} consumer groups ($Default included), not {}",
            distinct.len()
        )));
    }
    Ok(())
}

/// A trimmed host name of letters, digits, `.`, `-` and `_`.
fn valid_hostname(text: &str) -> Result<String, EmulatorError> {
    let hostname = text.trim().to_owned();
    if hostname.is_empty()
        || !hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(EmulatorError::Config(format!(
            "`{hostname}` is not a valid host name"
        )));
    }
    Ok(hostname)
}

/// Where file uploads go, as `hub.json` lists it.
pub(crate) struct BlobEntry {
    /// `https://{hostname}:{port}` (the built-in endpoint) or the storage account's blob
    /// endpoint.
    pub(crate) endpoint: String,
    /// The container uploads go to.
    pub(crate) container: String,
    /// The storage account's name, when uploads go to one (never its key).
    pub(crate) account: Option<String>,
}

/// The Device Provisioning Service as `hub.json` lists it.
pub(crate) struct DpsEntry {
    /// The id scope devices name.
    pub(crate) id_scope: String,
    /// The DPS host name.
    pub(crate) hostname: String,
    /// `host:port` devices register at (the HTTPS, MQTT and AMQP ports serve it too).
    pub(crate) global_endpoint: String,
    /// The `provisioningserviceowner` connection string (a secret).
    pub(crate) connection_string: String,
}

/// `hub.json`'s `event_hubs` entry: the built-in Event Hubs-compatible endpoint.
pub(crate) struct EventHubsEntry {
    /// `sb://{hostname}/` (with `:{port}` when the AMQP port is not 5671).
    pub(crate) endpoint: String,
    /// The AMQP-over-TLS port it is served on (the hub's).
    pub(crate) port: u16,
    /// The entity (`EntityPath`): the hub's name.
    pub(crate) entity_path: String,
    /// The partition count.
    pub(crate) partitions: u32,
    /// The consumer groups, `$Default` first.
    pub(crate) consumer_groups: Vec<String>,
    /// The `Endpoint=…;EntityPath=…` connection string of every policy with ServiceConnect.
    pub(crate) connection_strings: BTreeMap<String, String>,
    /// The `iothub-message-source` of every hub notification routed here.
    pub(crate) routed_sources: Vec<&'static str>,
}

impl EventHubsEntry {
    /// The connection string to hand a consumer: the `service` policy's, or the first
    /// policy's with ServiceConnect.
    pub(crate) fn connection_string(&self) -> Option<&str> {
        self.connection_strings
            .get("service")
            .or_else(|| self.connection_strings.values().next())
            .map(String::as_str)
    }
}

/// Writes `hub.json` atomically (temporary file, then rename), owner-readable only.
pub(crate) fn write_hub_file(
    dir: &Path,
    hostname: &str,
    ports: &BTreeMap<&str, u16>,
    blob: &BlobEntry,
    connection_strings: &BTreeMap<String, String>,
    dps: &DpsEntry,
    event_hubs: &EventHubsEntry,
) -> Result<(), EmulatorError> {
    let doc = json!({
        "hostname": hostname,
        "ports": ports,
        "blob": match &blob.account {
            Some(account) => json!({"endpoint": blob.endpoint, "container": blob.container, "account": account}),
            None => json!({"endpoint": blob.endpoint, "container": blob.container}),
        },
        "connection_strings": connection_strings,
        "dps": {
            "id_scope": dps.id_scope,
            "hostname": dps.hostname,
            "global_endpoint": dps.global_endpoint,
            "connection_string": dps.connection_string,
        },
        "event_hubs": {
            "endpoint": event_hubs.endpoint,
            "port": event_hubs.port,
            "entity_path": event_hubs.entity_path,
            "partitions": event_hubs.partitions,
            "consumer_groups": event_hubs.consumer_groups,
            "connection_string": event_hubs.connection_string(),
            "connection_strings": event_hubs.connection_strings,
            "routed_sources": event_hubs.routed_sources,
        },
    });
    let text =
        serde_json::to_string_pretty(&doc).map_err(|e| EmulatorError::Config(e.to_string()))?;
    let tmp = dir.join(format!("{HUB_FILE}.tmp"));
    write_private(&tmp, text.as_bytes())?;
    std::fs::rename(&tmp, dir.join(HUB_FILE))?;
    Ok(())
}

/// The hub's file-upload settings (what the Azure portal's "File upload" blade sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileUploadOptions {
    /// How long the blob SAS URI handed to a device stays valid. Default 1 hour; 1 minute to
    /// 24 hours.
    pub sas_ttl: Duration,
    /// Whether a completed upload puts a notification on `/messages/serviceBound/filenotifications`.
    /// Default on (IoT Hub's default is off; an emulator is more useful with it on).
    pub notifications: bool,
    /// How long a notification handed to a service reader stays locked. Default 60 s; 5 s to
    /// 300 s.
    pub lock_duration: Duration,
    /// Deliveries of a notification before it is dropped. Default 10; 1 to 100.
    pub max_delivery_count: u32,
}

impl Default for FileUploadOptions {
    fn default() -> Self {
        Self {
            sas_ttl: Duration::from_secs(3600),
            notifications: true,
            lock_duration: Duration::from_secs(60),
            max_delivery_count: 10,
        }
    }
}

impl FileUploadOptions {
    fn validate(&self) -> Result<(), EmulatorError> {
        let check = |ok: bool, what: String| {
            if ok {
                Ok(())
            } else {
                Err(EmulatorError::Config(what))
            }
        };
        check(
            (Duration::from_secs(60)..=Duration::from_secs(24 * 3600)).contains(&self.sas_ttl),
            format!(
                "the file-upload SAS lifetime must be 1 minute to 24 hours, not {:?}",
                self.sas_ttl
            ),
        )?;
        check(
            (Duration::from_secs(5)..=Duration::from_secs(300)).contains(&self.lock_duration),
            format!(
                "the file-notification lock must be 5 to 300 seconds, not {:?}",
                self.lock_duration
            ),
        )?;
        check(
            (1..=100).contains(&self.max_delivery_count),
            format!(
                "the file-notification delivery count must be 1 to 100, not {}",
                self.max_delivery_count
            ),
        )
    }
}
