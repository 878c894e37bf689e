//! `azure-iot device export|import` (import/export devices jobs, in the spirit of
//! `az iot hub device-identity export|import`) and `azure-iot hub container-sas` (a container
//! SAS URI on the emulator's blob endpoint, for those jobs).

use std::path::PathBuf;
use std::time::Duration;

use azure_iot_service::ExportImportJob;
use clap::Args;

use crate::print_json;
use crate::target::HubArgs;

/// How often `--wait` asks for the job's status.
const POLL: Duration = Duration::from_millis(500);

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// The container to write `devices.txt` into: a URI with a SAS granting write.
    #[arg(long = "blob-container-uri")]
    container_uri: String,
    /// Leave the symmetric keys out of the export.
    #[arg(long)]
    exclude_keys: bool,
    /// Also write the configurations (`configurations.txt`).
    #[arg(long)]
    include_configurations: bool,
    /// Wait until the job ends and print it then (exit status 1 if it failed).
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    hub: HubArgs,
}

#[derive(Args)]
pub(crate) struct ImportArgs {
    /// The container holding `devices.txt`: a URI with a SAS granting read.
    #[arg(long = "input-blob-container-uri")]
    input: String,
    /// Where `importErrors.log` goes: a URI with a SAS granting write.
    #[arg(long = "output-blob-container-uri")]
    output: String,
    /// Also import `configurations.txt`.
    #[arg(long)]
    include_configurations: bool,
    /// Wait until the job ends and print it then (exit status 1 if it failed).
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    hub: HubArgs,
}

#[derive(Args)]
pub(crate) struct ContainerSasArgs {
    /// The container name (3–63 lowercase letters, digits and hyphens).
    #[arg(long)]
    name: String,
    /// The emulator's data directory (its hub.json and ca.pem).
    #[arg(long, env = "AZURE_IOT_HUB_DATA_DIR", default_value = ".azure-iot-hub")]
    data_dir: PathBuf,
}

/// `azure-iot device export`.
pub(crate) async fn export(args: ExportArgs) -> Result<(), String> {
    let mut job = ExportImportJob::export(&args.container_uri, args.exclude_keys);
    job.include_configurations = args.include_configurations;
    run(&args.hub, job, args.wait).await
}

/// `azure-iot device import`.
pub(crate) async fn import(args: ImportArgs) -> Result<(), String> {
    let mut job = ExportImportJob::import(&args.input, &args.output);
    job.include_configurations = args.include_configurations;
    run(&args.hub, job, args.wait).await
}

async fn run(hub: &HubArgs, job: ExportImportJob, wait: bool) -> Result<(), String> {
    let hub = hub.resolve()?;
    let mut job = hub
        .service
        .create_export_import_job(&job)
        .await
        .map_err(|e| e.to_string())?;
    if wait {
        let id = job.job_id.clone().unwrap_or_default();
        while !job.is_finished() {
            tokio::time::sleep(POLL).await;
            job = hub
                .service
                .get_export_import_job(&id)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    print_json(&job)?;
    match job.status.as_deref() {
        Some("failed") => Err(format!(
            "the job failed: {}",
            job.failure_reason.as_deref().unwrap_or("no reason given")
        )),
        _ => Ok(()),
    }
}

/// `azure-iot hub container-sas`: prints the container URI with its SAS.
pub(crate) async fn container_sas(args: ContainerSasArgs) -> Result<(), String> {
    let hub = crate::connect::HubConnection::from_data_dir(&args.data_dir)?;
    let path = format!("/$emulator/blob/containers/{}/sas", args.name);
    let reply = hub.send_json(reqwest::Method::POST, &path, None).await?;
    let uri = reply.body["containerUri"]
        .as_str()
        .ok_or("the emulator answered without a containerUri")?;
    crate::print_line(uri)
}
