//! `azure-iot hub ca …` and `azure-iot dps ca …`: CA certificates registered with the running
//! emulator's hub (`/certificates`, service API) or its DPS (`/$emulator/dps/certificates`,
//! emulator-only), through [`HubConnection`]. Both registries take and answer the same shapes,
//! so one command set serves both.

use std::path::PathBuf;

use clap::Subcommand;

use crate::connect::HubConnection;
use crate::print_line;

/// What to do with the registered CAs.
#[derive(Subcommand)]
pub(crate) enum CaCommand {
    /// Register (or replace) a CA certificate (PEM) with the running emulator.
    Add {
        /// A name for the CA (A-Z a-z 0-9 - _ .).
        #[arg(long)]
        name: String,
        /// The CA certificate, PEM.
        #[arg(long, visible_alias = "cert")]
        file: PathBuf,
        /// The emulator's data directory (its hub.json and ca.pem).
        #[arg(long, env = "AZURE_IOT_HUB_DATA_DIR", default_value = ".azure-iot-hub")]
        data_dir: PathBuf,
    },
    /// List the registered CA certificates: name, SHA-256 thumbprint, subject.
    List {
        /// The emulator's data directory (its hub.json and ca.pem).
        #[arg(long, env = "AZURE_IOT_HUB_DATA_DIR", default_value = ".azure-iot-hub")]
        data_dir: PathBuf,
    },
    /// Delete a registered CA certificate; devices chaining to it are refused from then on.
    Delete {
        /// The CA's name.
        name: String,
        /// The emulator's data directory (its hub.json and ca.pem).
        #[arg(long, env = "AZURE_IOT_HUB_DATA_DIR", default_value = ".azure-iot-hub")]
        data_dir: PathBuf,
    },
}

/// Which emulator service's CA registry a command manages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Registry {
    /// The hub's (`hub ca`).
    Hub,
    /// The DPS's (`dps ca`).
    Dps,
}

impl Registry {
    fn connect(self, data_dir: &std::path::Path) -> Result<HubConnection, String> {
        match self {
            Self::Hub => HubConnection::from_data_dir(data_dir),
            Self::Dps => HubConnection::dps_from_data_dir(data_dir),
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Hub => "/certificates",
            Self::Dps => "/$emulator/dps/certificates",
        }
    }
}

/// Runs `command` against `registry`.
pub(crate) async fn run(registry: Registry, command: CaCommand) -> Result<(), String> {
    let base = registry.path();
    match command {
        CaCommand::Add {
            name,
            file,
            data_dir,
        } => {
            let pem = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let connection = registry.connect(&data_dir)?;
            let body = serde_json::json!({"properties": {"certificate": pem}});
            let reply = connection
                .send_json(reqwest::Method::PUT, &format!("{base}/{name}"), Some(body))
                .await?;
            print_line(&format!(
                "registered CA `{name}` ({})",
                reply.body["properties"]["subject"].as_str().unwrap_or("?")
            ))?;
        }
        CaCommand::List { data_dir } => {
            let connection = registry.connect(&data_dir)?;
            let reply = connection.send(reqwest::Method::GET, base).await?;
            for ca in reply.body["value"].as_array().into_iter().flatten() {
                print_line(&format!(
                    "{}\t{}\t{}",
                    ca["name"].as_str().unwrap_or("?"),
                    ca["properties"]["thumbprint"].as_str().unwrap_or("?"),
                    ca["properties"]["subject"].as_str().unwrap_or("?")
                ))?;
            }
        }
        CaCommand::Delete { name, data_dir } => {
            let connection = registry.connect(&data_dir)?;
            connection
                .send(reqwest::Method::DELETE, &format!("{base}/{name}"))
                .await?;
            print_line(&format!("deleted CA `{name}`"))?;
        }
    }
    Ok(())
}
