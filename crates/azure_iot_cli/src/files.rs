//! `azure-iot hub files list` and `azure-iot hub files download`: the files devices uploaded
//! to the emulator's blob endpoint (through the emulator's `/$emulator/files` API, with the
//! `iothubowner` key from `hub.json`).

use std::io::Write as _;
use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;

use crate::connect::HubConnection;
use crate::monitor::Output;

#[derive(Subcommand)]
pub(crate) enum FilesCommand {
    /// List uploaded files (`{deviceId}/{name}`), with size and time.
    List {
        /// The emulator's data directory (its hub.json and ca.pem).
        #[arg(long, env = "AZURE_IOT_HUB_DATA_DIR", default_value = ".azure-iot-hub")]
        data_dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Download one uploaded file.
    Download {
        /// The file's name as `list` prints it: `{deviceId}/{name}`.
        #[arg(long)]
        name: String,
        /// Where to write it (refused if it exists, unless --force).
        #[arg(long)]
        file: PathBuf,
        /// Overwrite --file if it exists.
        #[arg(long)]
        force: bool,
        /// The emulator's data directory (its hub.json and ca.pem).
        #[arg(long, env = "AZURE_IOT_HUB_DATA_DIR", default_value = ".azure-iot-hub")]
        data_dir: PathBuf,
    },
}

pub(crate) async fn run(command: FilesCommand) -> Result<(), String> {
    match command {
        FilesCommand::List { data_dir, output } => {
            let hub = HubConnection::from_data_dir(&data_dir)?;
            let reply = hub.send(Method::GET, "/$emulator/files").await?;
            let files = reply.body.as_array().cloned().unwrap_or_default();
            let mut out = std::io::stdout().lock();
            for file in &files {
                let _ = match output {
                    Output::Json => writeln!(out, "{file}"),
                    Output::Text => writeln!(
                        out,
                        "{}  {} bytes  {}",
                        file["name"].as_str().unwrap_or_default(),
                        file["size"],
                        file["lastModified"].as_str().unwrap_or_default()
                    ),
                };
            }
            if files.is_empty() && output == Output::Text {
                let _ = writeln!(out, "(no uploaded files)");
            }
            Ok(())
        }
        FilesCommand::Download {
            name,
            file,
            force,
            data_dir,
        } => {
            if file.exists() && !force {
                return Err(format!(
                    "{} exists; pass --force to overwrite it",
                    file.display()
                ));
            }
            let hub = HubConnection::from_data_dir(&data_dir)?;
            let path = format!(
                "/$emulator/files/{}",
                name.split('/')
                    .map(|s| {
                        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                            .to_string()
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            );
            let mut response = hub.get_stream(&path).await?;
            // Written next to the target and renamed, so a broken download leaves no
            // half-written file under the name.
            let partial = file.with_extension("partial");
            let result = async {
                let mut out = std::fs::File::create(&partial)
                    .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
                let mut total = 0u64;
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| format!("the download broke off: {e}"))?
                {
                    out.write_all(&chunk)
                        .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
                    total += chunk.len() as u64;
                }
                out.sync_all()
                    .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
                std::fs::rename(&partial, &file)
                    .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
                Ok::<u64, String>(total)
            }
            .await;
            match result {
                Ok(total) => {
                    println!("{name}: {total} bytes written to {}", file.display());
                    Ok(())
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&partial);
                    Err(e)
                }
            }
        }
    }
}
