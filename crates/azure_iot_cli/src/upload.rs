//! `azure-iot device upload`: a device uploads a file through the hub (file upload: the
//! hub's SAS, the blob written in blocks, the outcome reported), with a progress line on a
//! terminal.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;

use azure_iot_device::{ClientOptions, DeviceClient};
use clap::Args;

use crate::simulate::fleet;
use crate::target::HubArgs;

#[derive(Args)]
pub(crate) struct UploadArgs {
    /// The device id (its key is read from the registry).
    #[arg(
        long,
        short = 'd',
        required_unless_present = "device_connection_string"
    )]
    device_id: Option<String>,
    /// The file to upload.
    #[arg(long, short = 'f')]
    file: PathBuf,
    /// The blob name (the hub stores it as `{deviceId}/{name}`). Default: the file's name.
    #[arg(long)]
    name: Option<String>,
    /// Upload as the device with this connection string instead of reading its key from the
    /// registry.
    #[arg(long, env = "IOTHUB_DEVICE_CONNECTION_STRING", hide_env_values = true)]
    device_connection_string: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
}

pub(crate) async fn run(args: UploadArgs) -> Result<(), String> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => args
            .file
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("{} has no file name; pass --name", args.file.display()))?,
    };
    let file = tokio::fs::File::open(&args.file)
        .await
        .map_err(|e| format!("cannot open {}: {e}", args.file.display()))?;
    let total = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let devices = match (&args.device_connection_string, &args.device_id) {
        (Some(cs), _) => fleet::from_connection_string(&args.hub, cs)?,
        (None, Some(id)) => fleet::registered(args.hub.resolve()?, id).await?,
        (None, None) => {
            return Err("name the device: --device-id or --device-connection-string".into());
        }
    };
    let Some(identity) = devices.identities.first() else {
        return Err("no device to upload as".into());
    };
    let mut options = ClientOptions::default();
    if let Some(ports) = devices.ports {
        options = options.port(ports.mqtt).https_port(ports.https);
    }
    if let Some(pem) = &devices.ca_pem {
        options = options.trusted_ca_pem(pem.clone());
    }
    let client = DeviceClient::from_connection_string(&identity.connection_string, options)
        .await
        .map_err(|e| format!("device {}: {e}", identity.device_id))?;
    let tty = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let uploaded = client
        .upload_file_from_with_progress(&name, file, |stored| {
            if tty {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{stored} of {total} bytes");
                let _ = err.flush();
            }
        })
        .await;
    if tty {
        eprintln!();
    }
    client.close().await;
    let size = uploaded.map_err(|e| format!("uploading {}: {e}", args.file.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    crate::print_line(&format!(
        "uploaded {size} bytes as {}/{name} in {seconds:.2} s ({:.1} MiB/s)",
        identity.device_id,
        size as f64 / 1024.0 / 1024.0 / seconds.max(1e-9)
    ))
}
