//! Emulator configuration, and the `hub.json` file other tools read.
//!
//! `hub.json` (in the data directory, readable by its owner only because it holds keys):
//!
//! ```json
//! {"hostname": "localhost",
//!  "ports": {"https": 443, "mqtt": 8883, "amqp": 5671},
//!  "connection_strings": {"iothubowner": "HostName=...", "service": "...", "registryRead": "...",
//!                         "registryReadWrite": "...", "device": "..."}}
//! ```
//!
//! Together with `ca.pem` this
//! is the contract scripts and the conformance suite rely on: keep names and shape.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::error::EmulatorError;
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
    pub(crate) tls: TlsSource,
    pub(crate) telemetry: TelemetryOptions,
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

    pub(crate) fn into_config(self) -> Result<Config, EmulatorError> {
        let hostname = self.hostname.trim().to_owned();
        if hostname.is_empty()
            || !hostname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(EmulatorError::Config(format!(
                "`{hostname}` is not a valid host name"
            )));
        }
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
        Ok(Config {
            hostname,
            data_dir: self.data_dir,
            in_memory: self.in_memory,
            https_addr: SocketAddr::new(self.bind, self.https_port),
            mqtt_addr: SocketAddr::new(self.bind, self.mqtt_port),
            amqp_addr: SocketAddr::new(self.bind, self.amqp_port),
            tls: self.tls,
            telemetry: self.telemetry,
        })
    }
}

/// Writes `hub.json` atomically (temporary file, then rename), owner-readable only.
pub(crate) fn write_hub_file(
    dir: &Path,
    hostname: &str,
    ports: &BTreeMap<&str, u16>,
    connection_strings: &BTreeMap<String, String>,
) -> Result<(), EmulatorError> {
    let doc = json!({
        "hostname": hostname,
        "ports": ports,
        "connection_strings": connection_strings,
    });
    let text =
        serde_json::to_string_pretty(&doc).map_err(|e| EmulatorError::Config(e.to_string()))?;
    let tmp = dir.join(format!("{HUB_FILE}.tmp"));
    write_private(&tmp, text.as_bytes())?;
    std::fs::rename(&tmp, dir.join(HUB_FILE))?;
    Ok(())
}
