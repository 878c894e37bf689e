//! Which hub a service command talks to, and with which credentials.
//!
//! In order: `--connection-string` (or `IOTHUB_CONNECTION_STRING`), a shared access policy
//! connection string of any hub; otherwise the local emulator described by `hub.json` in
//! `--data-dir` (or `AZURE_IOT_HUB_DATA_DIR`, default `.azure-iot-hub`), with its
//! `iothubowner` policy, its ports and its CA. A connection string to the emulator's host
//! still picks up the emulator's ports and CA from the data directory when it is there.

use std::path::{Path, PathBuf};

use azure_iot_core::ServiceConnectionString;
use azure_iot_service::{ServiceClient, ServiceClientOptions};
use clap::Args;
use serde_json::Value;

/// The hub options every service command takes.
#[derive(Args, Debug, Clone)]
pub(crate) struct HubArgs {
    /// A shared access policy connection string of the hub
    /// (`HostName=...;SharedAccessKeyName=...;SharedAccessKey=...`). Default: the local
    /// emulator's iothubowner policy from --data-dir.
    #[arg(long, env = "IOTHUB_CONNECTION_STRING", hide_env_values = true)]
    pub(crate) connection_string: Option<String>,
    /// The local emulator's data directory (its hub.json and ca.pem).
    #[arg(long, env = "AZURE_IOT_HUB_DATA_DIR", default_value = ".azure-iot-hub")]
    pub(crate) data_dir: PathBuf,
    /// A CA certificate (PEM) to trust instead of the system's roots.
    #[arg(long)]
    pub(crate) ca_file: Option<PathBuf>,
}

/// A resolved hub: a service client and what device commands need to reach the same hub.
pub(crate) struct Hub {
    pub(crate) service: ServiceClient,
    pub(crate) host: String,
    /// The emulator's device ports, when the hub is the local emulator (a real hub uses each
    /// transport's standard port).
    pub(crate) device_ports: Option<DevicePorts>,
    pub(crate) ca_pem: Option<String>,
}

/// Where the local emulator takes device connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DevicePorts {
    pub(crate) mqtt: u16,
    pub(crate) amqp: u16,
    /// The HTTPS port, where WebSocket transports connect.
    pub(crate) https: u16,
}

impl DevicePorts {
    /// The port a device client on `transport` dials.
    pub(crate) fn of(&self, transport: azure_iot_device::Transport) -> u16 {
        use azure_iot_device::Transport;
        match transport {
            Transport::Mqtt => self.mqtt,
            Transport::Amqp => self.amqp,
            _ => self.https,
        }
    }
}

/// What `hub.json` (and `ca.pem`) in an emulator's data directory say.
pub(crate) struct Local {
    pub(crate) host: String,
    pub(crate) https: u16,
    pub(crate) mqtt: u16,
    pub(crate) amqp: u16,
    /// The iothubowner connection string.
    pub(crate) owner: String,
    pub(crate) ca_pem: String,
    /// The emulator's Device Provisioning Service, when `hub.json` lists one.
    pub(crate) dps: Option<LocalDps>,
}

/// The `dps` entry of `hub.json`.
pub(crate) struct LocalDps {
    /// The id scope devices name.
    pub(crate) id_scope: String,
    /// The host devices dial (`global_endpoint` without its port).
    pub(crate) endpoint_host: String,
}

/// `hub.json` and `ca.pem` of an emulator's data directory, read but not yet interpreted.
pub(crate) struct DataDir {
    /// Where `hub.json` is (for messages).
    pub(crate) file: PathBuf,
    pub(crate) doc: Value,
    pub(crate) ca_pem: String,
}

impl DataDir {
    /// Reads `hub.json` and `ca.pem` in `dir`.
    pub(crate) fn read(dir: &Path) -> Result<Self, String> {
        let file = dir.join("hub.json");
        let text = std::fs::read_to_string(&file).map_err(|e| {
            format!(
                "cannot read {} ({e}); is `azure-iot hub start --data-dir {}` running?",
                file.display(),
                dir.display()
            )
        })?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not valid JSON: {e}", file.display()))?;
        let ca_file = dir.join("ca.pem");
        let ca_pem = std::fs::read_to_string(&ca_file)
            .map_err(|e| format!("cannot read {}: {e}", ca_file.display()))?;
        Ok(Self { file, doc, ca_pem })
    }

    /// `ports.{name}`.
    pub(crate) fn port(&self, name: &str) -> Result<u16, String> {
        self.doc["ports"][name]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("{} has no ports.{name}", self.file.display()))
    }

    /// `connection_strings.{policy}`.
    pub(crate) fn connection_string(&self, policy: &str) -> Result<String, String> {
        self.doc["connection_strings"][policy]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{} has no {policy} connection string", self.file.display()))
    }
}

/// Reads the emulator's `hub.json` and `ca.pem` in `dir`.
pub(crate) fn read_local(dir: &Path) -> Result<Local, String> {
    let data = DataDir::read(dir)?;
    Ok(Local {
        host: data.doc["hostname"]
            .as_str()
            .ok_or_else(|| format!("{} has no hostname", data.file.display()))?
            .to_owned(),
        https: data.port("https")?,
        mqtt: data.port("mqtt")?,
        amqp: data.port("amqp")?,
        owner: data.connection_string("iothubowner")?,
        ca_pem: data.ca_pem,
        dps: local_dps(&data.doc["dps"]),
    })
}

/// The DPS entry (`{"id_scope": …, "global_endpoint": "host:port", …}`), if complete.
fn local_dps(entry: &Value) -> Option<LocalDps> {
    let id_scope = entry["id_scope"].as_str()?.to_owned();
    let endpoint = entry["global_endpoint"].as_str()?;
    let endpoint_host = endpoint
        .rsplit_once(':')
        .map_or(endpoint, |(host, _)| host)
        .to_owned();
    Some(LocalDps {
        id_scope,
        endpoint_host,
    })
}

/// The contents of the file `--ca-file` names, if it names one.
pub(crate) fn read_ca_file(path: Option<&Path>) -> Result<Option<String>, String> {
    path.map(|path| {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    })
    .transpose()
}

impl Local {
    /// Where this emulator takes device connections.
    pub(crate) fn device_ports(&self) -> DevicePorts {
        DevicePorts {
            mqtt: self.mqtt,
            amqp: self.amqp,
            https: self.https,
        }
    }
}

impl HubArgs {
    /// The local emulator's device ports and CA, if `--data-dir` describes an emulator on `host`.
    pub(crate) fn local_device_endpoint(&self, host: &str) -> Option<(DevicePorts, String)> {
        read_local(&self.data_dir)
            .ok()
            .filter(|l| l.host.eq_ignore_ascii_case(host))
            .map(|l| (l.device_ports(), l.ca_pem))
    }

    /// The hub these arguments name.
    pub(crate) fn resolve(&self) -> Result<Hub, String> {
        let given_ca = read_ca_file(self.ca_file.as_deref())?;
        let (connection_string, local) = match &self.connection_string {
            Some(cs) => {
                let parsed = ServiceConnectionString::parse(cs)
                    .map_err(|e| format!("--connection-string: {e}"))?;
                // The emulator's own host: use its ports and CA.
                let local = read_local(&self.data_dir)
                    .ok()
                    .filter(|l| l.host.eq_ignore_ascii_case(parsed.host_name()));
                (cs.clone(), local)
            }
            None => {
                let local = read_local(&self.data_dir).map_err(|e| {
                    format!(
                        "no hub given and no emulator found: {e} Or pass --connection-string \
                         (or set IOTHUB_CONNECTION_STRING)."
                    )
                })?;
                (local.owner.clone(), Some(local))
            }
        };
        let mut options = ServiceClientOptions::default();
        let mut device_ports = None;
        let mut ca_pem = given_ca;
        if let Some(local) = &local {
            options = options.https_port(local.https).amqp_port(local.amqp);
            device_ports = Some(local.device_ports());
            ca_pem.get_or_insert_with(|| local.ca_pem.clone());
        }
        if let Some(pem) = &ca_pem {
            options = options.trusted_ca_pem(pem.clone());
        }
        let service = ServiceClient::from_connection_string(&connection_string, options)
            .map_err(|e| format!("connection string: {e}"))?;
        Ok(Hub {
            host: service.host_name().to_owned(),
            service,
            device_ports,
            ca_pem,
        })
    }
}
