//! `azure-iot dps …`: the Device Provisioning Service's enrollments, enrollment groups and
//! registration states, through the provisioning service client
//! (`azure_iot_provisioning_service`).
//!
//! Which DPS: `--connection-string` (or `PROVISIONING_CONNECTION_STRING`), a shared access
//! policy connection string of any DPS; otherwise the local emulator's
//! `provisioningserviceowner` policy from `hub.json` (`dps.connection_string`) in `--data-dir`.
//! A connection string to the emulator's DPS host still picks up its HTTPS port and CA from
//! the data directory. By default the emulator's DPS has the hub's host name; a DPS host name
//! of its own (`hub start --dps-hostname`) need not resolve: the client then connects where
//! the hub's host name does (the emulator serves both on one port).
//!
//! Keys: `create` prints what DPS answers, generated keys included (that is how you learn
//! them); `show` and `list` hide keys unless `--show-keys`; `enrollment-group derive-key`
//! prints one device's derived key.
//!
//! `dps ca` is the exception: the local emulator's DPS CA registry (`crate::ca`), which no
//! SDK client knows (Azure registers DPS CAs through its management plane).

mod enrollment;

use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;

use azure_iot_core::ServiceConnectionString;
use azure_iot_provisioning_service::{
    IfMatch, ProvisioningServiceClient, ProvisioningServiceClientOptions, Query,
};
use clap::{Args, Subcommand};
use futures_util::TryStreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::monitor::Output;
use crate::target::{DataDir, read_ca_file};
use crate::{print_json, print_line};

pub(crate) use enrollment::{EnrollmentCommand, GroupCommand};

#[derive(Subcommand)]
pub(crate) enum DpsCommand {
    /// Individual enrollments: one device each (symmetric key, X.509 certificate or TPM).
    #[command(subcommand)]
    Enrollment(EnrollmentCommand),
    /// Enrollment groups: devices sharing a group key or a signing certificate.
    #[command(subcommand)]
    EnrollmentGroup(GroupCommand),
    /// Registration states: what happened when devices registered.
    #[command(subcommand)]
    Registration(RegistrationCommand),
    /// CA certificates registered with the local emulator's DPS, for X.509 enrollment groups
    /// that name them in `caReferences`.
    #[command(subcommand)]
    Ca(crate::ca::CaCommand),
}

pub(crate) async fn run(command: DpsCommand) -> Result<(), String> {
    match command {
        DpsCommand::Enrollment(command) => enrollment::run_enrollment(command).await,
        DpsCommand::EnrollmentGroup(command) => enrollment::run_group(command).await,
        DpsCommand::Registration(command) => run_registration(command).await,
        DpsCommand::Ca(command) => crate::ca::run(crate::ca::Registry::Dps, command).await,
    }
}

/// The DPS options every `dps` command takes.
#[derive(Args, Debug, Clone)]
pub(crate) struct DpsArgs {
    /// A shared access policy connection string of the DPS
    /// (`HostName=….azure-devices-provisioning.net;SharedAccessKeyName=…;SharedAccessKey=…`).
    /// Default: the local emulator's provisioningserviceowner policy from --data-dir.
    #[arg(long, env = "PROVISIONING_CONNECTION_STRING", hide_env_values = true)]
    connection_string: Option<String>,
    /// The local emulator's data directory (its hub.json and ca.pem).
    #[arg(long, env = "AZURE_IOT_HUB_DATA_DIR", default_value = ".azure-iot-hub")]
    data_dir: PathBuf,
    /// A CA certificate (PEM) to trust instead of the system's roots.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

impl DpsArgs {
    /// The provisioning service client these arguments name.
    pub(crate) fn resolve(&self) -> Result<ProvisioningServiceClient, String> {
        let mut ca_pem = read_ca_file(self.ca_file.as_deref())?;
        let local = DataDir::read(&self.data_dir);
        let (connection_string, local) = match &self.connection_string {
            Some(cs) => {
                let host = ServiceConnectionString::parse(cs)
                    .map_err(|e| format!("--connection-string: {e}"))?
                    .host_name()
                    .to_owned();
                // The emulator's own DPS: use its port and CA.
                let local = local.ok().filter(|data| {
                    data.doc["dps"]["hostname"]
                        .as_str()
                        .is_some_and(|own| own.eq_ignore_ascii_case(&host))
                });
                (cs.clone(), local)
            }
            None => {
                let data = local.map_err(|e| {
                    format!(
                        "no DPS given and no emulator found: {e} Or pass --connection-string \
                         (or set PROVISIONING_CONNECTION_STRING)."
                    )
                })?;
                let cs = data.doc["dps"]["connection_string"]
                    .as_str()
                    .ok_or_else(|| {
                        format!(
                            "{} has no dps.connection_string (an emulator without DPS?)",
                            data.file.display()
                        )
                    })?
                    .to_owned();
                (cs, Some(data))
            }
        };
        let mut options = ProvisioningServiceClientOptions::default();
        if let Some(local) = local {
            let port = local.port("https")?;
            options = options.https_port(port);
            if let Some(address) = local_address(&local, port) {
                options = options.connect_address(address);
            }
            ca_pem.get_or_insert(local.ca_pem);
        }
        if let Some(pem) = ca_pem {
            options = options.trusted_ca_pem(pem);
        }
        ProvisioningServiceClient::from_connection_string(&connection_string, options)
            .map_err(|e| format!("connection string: {e}"))
    }
}

/// Where the emulator of `data` listens, when its DPS has a host name of its own: the address
/// its hub's host name resolves to. `None` when DPS has the hub's host name (it resolves as
/// the hub's does).
pub(crate) fn local_address(data: &DataDir, port: u16) -> Option<IpAddr> {
    let host = data.doc["hostname"].as_str()?;
    let dps = data.doc["dps"]["hostname"].as_str()?;
    if dps.eq_ignore_ascii_case(host) {
        return None;
    }
    (host, port).to_socket_addrs().ok()?.next().map(|a| a.ip())
}

/// How `list` commands read a query.
#[derive(Args)]
pub(crate) struct ListArgs {
    /// Stop after this many items.
    #[arg(long)]
    top: Option<usize>,
    /// Items per page requested from DPS.
    #[arg(long, default_value_t = 100)]
    page_size: u32,
    /// `text`: one line per item (id, status, …); `json`: one JSON object per line.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Show symmetric keys in JSON output (hidden by default).
    #[arg(long)]
    show_keys: bool,
}

impl ListArgs {
    /// Prints the items of `query`: `line` makes the text form of one.
    async fn print<T: DeserializeOwned + Serialize + Send + 'static>(
        &self,
        query: Query<T>,
        line: impl Fn(&T) -> String,
    ) -> Result<(), String> {
        let mut items = query.page_size(self.page_size).into_stream();
        let mut printed = 0;
        while self.top.is_none_or(|top| printed < top) {
            let Some(item) = items.try_next().await.map_err(|e| e.to_string())? else {
                break;
            };
            match self.output {
                Output::Text => print_line(&line(&item))?,
                Output::Json => print_line(&shown(&item, self.show_keys)?.to_string())?,
            }
            printed += 1;
        }
        Ok(())
    }
}

/// `value` as JSON, its symmetric keys replaced by `<hidden>` unless `show_keys`.
fn shown(value: &impl Serialize, show_keys: bool) -> Result<Value, String> {
    let mut json = serde_json::to_value(value).map_err(|e| e.to_string())?;
    if !show_keys && let Some(Value::Object(keys)) = json.pointer_mut("/attestation/symmetricKey") {
        for key in keys.values_mut() {
            if key.as_str().is_some_and(|k| !k.is_empty()) {
                *key = Value::String("<hidden: --show-keys>".into());
            }
        }
    }
    Ok(json)
}

/// How an enum is spelled on the wire (`assigned`, `symmetricKey`).
fn wire_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// The condition `--etag` asks for.
fn condition(etag: Option<&str>) -> IfMatch {
    IfMatch::etag_or_any(etag)
}

#[derive(Subcommand)]
pub(crate) enum RegistrationCommand {
    /// Show a device's registration state.
    Show {
        /// The device's registration id.
        #[arg(long)]
        registration_id: String,
        #[command(flatten)]
        dps: DpsArgs,
    },
    /// List the registration states of an enrollment group's devices.
    List {
        /// The enrollment group.
        #[arg(long)]
        group_id: String,
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        dps: DpsArgs,
    },
    /// Delete a device's registration state (it registers afresh next time).
    Delete {
        /// The device's registration id.
        #[arg(long)]
        registration_id: String,
        /// Only if the state still has this ETag.
        #[arg(long)]
        etag: Option<String>,
        #[command(flatten)]
        dps: DpsArgs,
    },
}

async fn run_registration(command: RegistrationCommand) -> Result<(), String> {
    match command {
        RegistrationCommand::Show {
            registration_id,
            dps,
        } => {
            let state = dps
                .resolve()?
                .get_registration_state(&registration_id)
                .await
                .map_err(|e| e.to_string())?;
            print_json(&state)
        }
        RegistrationCommand::List {
            group_id,
            list,
            dps,
        } => {
            let query = dps
                .resolve()?
                .query_registration_states(&group_id, "*")
                .map_err(|e| e.to_string())?;
            list.print(query, |state| {
                format!(
                    "{}\t{}\t{}\t{}",
                    state.registration_id,
                    wire_name(&state.status),
                    state.assigned_hub.as_deref().unwrap_or("-"),
                    state.device_id.as_deref().unwrap_or("-"),
                )
            })
            .await
        }
        RegistrationCommand::Delete {
            registration_id,
            etag,
            dps,
        } => {
            dps.resolve()?
                .delete_registration_state(&registration_id, condition(etag.as_deref()))
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("deleted the registration state of {registration_id}");
            Ok(())
        }
    }
}
