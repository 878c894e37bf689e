//! `azure-iot device ...`: device identities in the hub's registry.

use azure_iot_service::{Device, DeviceStatus, IfMatch, Module};
use clap::{Args, Subcommand};

use crate::print_json;
use crate::simulate::SimulateArgs;
use crate::target::HubArgs;

#[derive(Subcommand)]
pub(crate) enum DeviceCommand {
    /// Register a device (keys are generated unless given).
    Create(CreateArgs),
    /// Show a device identity.
    Show(IdArgs),
    /// List device identities.
    List(ListArgs),
    /// Delete a device and its modules.
    Delete(DeleteArgs),
    /// Print a device's (or module's) connection string.
    ConnectionString(ConnectionStringArgs),
    /// Simulate devices (one or a fleet) sending telemetry at a rate, and summarise.
    Simulate(SimulateArgs),
    /// Upload a file as a device (IoT Hub file upload).
    Upload(crate::upload::UploadArgs),
    /// Export every identity with its twin into a blob container (an import/export job).
    Export(crate::export_import::ExportArgs),
    /// Import identities from a blob container (an import/export job).
    Import(crate::export_import::ImportArgs),
    /// Register a device with the Device Provisioning Service (the local emulator's by
    /// default) and print its hub, device id and connection string.
    Provision(crate::provision::ProvisionArgs),
    /// Print a TPM's endorsement key (base64, for a DPS TPM enrollment) and the registration
    /// id derived from it (creating and persisting the EK and SRK if the TPM has none).
    TpmInfo(crate::provision::TpmArgs),
}

#[derive(Args)]
pub(crate) struct IdArgs {
    /// The device id.
    #[arg(long, short = 'd')]
    device_id: String,
    /// A module of the device.
    #[arg(long, short = 'm')]
    module_id: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
}

#[derive(Args)]
pub(crate) struct CreateArgs {
    /// The device id.
    #[arg(long, short = 'd')]
    device_id: String,
    /// Create a module of the device instead (the device must exist).
    #[arg(long, short = 'm')]
    module_id: Option<String>,
    /// Primary key (base64); generated when absent.
    #[arg(long, requires = "secondary_key", conflicts_with_all = ["x509_thumbprint", "ca"])]
    primary_key: Option<String>,
    /// Secondary key (base64).
    #[arg(long, requires = "primary_key")]
    secondary_key: Option<String>,
    /// Authenticate with a self-signed certificate of this thumbprint (hex).
    #[arg(long, conflicts_with = "ca")]
    x509_thumbprint: Option<String>,
    /// Authenticate with a certificate signed by a registered CA.
    #[arg(long)]
    ca: bool,
    /// An IoT Edge device.
    #[arg(long)]
    edge: bool,
    /// Create it disabled.
    #[arg(long)]
    disabled: bool,
    #[command(flatten)]
    hub: HubArgs,
}

#[derive(Args)]
pub(crate) struct ListArgs {
    /// At most this many devices (the hub's limit is 1000).
    #[arg(long, default_value_t = 1000)]
    top: u32,
    #[command(flatten)]
    hub: HubArgs,
}

#[derive(Args)]
pub(crate) struct DeleteArgs {
    /// The device id.
    #[arg(long, short = 'd')]
    device_id: String,
    /// Delete a module of the device instead.
    #[arg(long, short = 'm')]
    module_id: Option<String>,
    /// Only if the identity still has this ETag.
    #[arg(long)]
    etag: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
}

#[derive(Args)]
pub(crate) struct ConnectionStringArgs {
    /// The device id.
    #[arg(long, short = 'd')]
    device_id: String,
    /// A module of the device.
    #[arg(long, short = 'm')]
    module_id: Option<String>,
    /// Use the secondary key.
    #[arg(long)]
    secondary: bool,
    #[command(flatten)]
    hub: HubArgs,
}

pub(crate) async fn run(command: DeviceCommand) -> Result<(), String> {
    match command {
        DeviceCommand::Create(args) => create(args).await,
        DeviceCommand::Show(args) => {
            let hub = args.hub.resolve()?;
            match &args.module_id {
                Some(module) => print_json(
                    &hub.service
                        .get_module(&args.device_id, module)
                        .await
                        .map_err(|e| e.to_string())?,
                ),
                None => print_json(
                    &hub.service
                        .get_device(&args.device_id)
                        .await
                        .map_err(|e| e.to_string())?,
                ),
            }
        }
        DeviceCommand::List(args) => {
            let hub = args.hub.resolve()?;
            let devices = hub
                .service
                .list_devices(args.top)
                .await
                .map_err(|e| e.to_string())?;
            print_json(&devices)
        }
        DeviceCommand::Delete(args) => {
            let hub = args.hub.resolve()?;
            let condition = IfMatch::etag_or_any(args.etag.as_deref());
            match &args.module_id {
                Some(module) => hub
                    .service
                    .delete_module(&args.device_id, module, condition)
                    .await
                    .map_err(|e| e.to_string())?,
                None => hub
                    .service
                    .delete_device(&args.device_id, condition)
                    .await
                    .map_err(|e| e.to_string())?,
            }
            eprintln!("deleted {}", args.device_id);
            Ok(())
        }
        DeviceCommand::ConnectionString(args) => {
            let hub = args.hub.resolve()?;
            let cs = connection_string(
                &hub,
                &args.device_id,
                args.module_id.as_deref(),
                args.secondary,
            )
            .await?;
            crate::print_line(&cs)
        }
        DeviceCommand::Simulate(args) => crate::simulate::run(args).await,
        DeviceCommand::Upload(args) => crate::upload::run(args).await,
        DeviceCommand::Provision(args) => crate::provision::run(args).await,
        DeviceCommand::TpmInfo(args) => crate::provision::tpm_info(args).await,
        DeviceCommand::Export(args) => crate::export_import::export(args).await,
        DeviceCommand::Import(args) => crate::export_import::import(args).await,
    }
}

async fn create(args: CreateArgs) -> Result<(), String> {
    let hub = args.hub.resolve()?;
    let mut device = Device::new(&args.device_id);
    if let (Some(primary), Some(secondary)) = (&args.primary_key, &args.secondary_key) {
        device = device.with_symmetric_key(primary, secondary);
    }
    if let Some(thumbprint) = &args.x509_thumbprint {
        device = device.with_x509_thumbprints(thumbprint, None);
    }
    if args.ca {
        device = device.with_certificate_authority();
    }
    if let Some(module_id) = &args.module_id {
        if args.edge || args.disabled {
            return Err("--edge and --disabled apply to devices, not modules".into());
        }
        let module = Module::new(&args.device_id, module_id)
            .with_authentication(device.authentication.clone());
        let created = hub
            .service
            .create_module(&module)
            .await
            .map_err(|e| e.to_string())?;
        return print_json(&created);
    }
    device = device.with_iot_edge(args.edge);
    if args.disabled {
        device = device.with_status(DeviceStatus::Disabled, None);
    }
    let created = hub
        .service
        .create_device(&device)
        .await
        .map_err(|e| e.to_string())?;
    print_json(&created)
}

/// The connection string of a device or module that authenticates with keys.
pub(crate) async fn connection_string(
    hub: &crate::target::Hub,
    device_id: &str,
    module_id: Option<&str>,
    secondary: bool,
) -> Result<String, String> {
    let authentication = match module_id {
        Some(module) => {
            hub.service
                .get_module(device_id, module)
                .await
                .map_err(|e| e.to_string())?
                .authentication
        }
        None => {
            hub.service
                .get_device(device_id)
                .await
                .map_err(|e| e.to_string())?
                .authentication
        }
    };
    let kind = authentication.kind;
    let keys = authentication
        .symmetric_key
        .filter(|k| !k.primary_key.is_empty())
        .ok_or_else(|| {
            format!(
                "{device_id} does not authenticate with keys (its authentication is {kind:?}): \
                 it has no connection string with a key"
            )
        })?;
    let key = if secondary {
        keys.secondary_key
    } else {
        keys.primary_key
    };
    let mut cs = format!("HostName={};DeviceId={device_id}", hub.host);
    if let Some(module) = module_id {
        cs.push_str(&format!(";ModuleId={module}"));
    }
    cs.push_str(&format!(";SharedAccessKey={key}"));
    Ok(cs)
}
