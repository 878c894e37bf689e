//! `azure-iot twin ...` and `azure-iot query`.

use azure_iot_service::{IfMatch, TwinPatch};
use clap::{Args, Subcommand};
use futures_util::TryStreamExt;
use serde_json::Value;

use crate::target::HubArgs;
use crate::{print_json, print_line};

#[derive(Subcommand)]
pub(crate) enum TwinCommand {
    /// Show a device's or module's twin.
    Show(ShowArgs),
    /// Merge tags and desired properties into a twin.
    Update(UpdateArgs),
}

#[derive(Args)]
pub(crate) struct ShowArgs {
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
pub(crate) struct UpdateArgs {
    /// The device id.
    #[arg(long, short = 'd')]
    device_id: String,
    /// A module of the device.
    #[arg(long, short = 'm')]
    module_id: Option<String>,
    /// Desired properties to merge (a JSON object; null removes a key).
    #[arg(long)]
    desired: Option<String>,
    /// Tags to merge (a JSON object; null removes a key).
    #[arg(long)]
    tags: Option<String>,
    /// Only if the twin still has this ETag.
    #[arg(long)]
    etag: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
}

#[derive(Args)]
pub(crate) struct QueryArgs {
    /// The query, e.g. "SELECT * FROM devices WHERE tags.floor = 3".
    #[arg(long, short = 'q')]
    query_command: String,
    /// Stop after this many items.
    #[arg(long)]
    top: Option<usize>,
    /// Items per page requested from the hub.
    #[arg(long, default_value_t = 100)]
    page_size: u32,
    #[command(flatten)]
    hub: HubArgs,
}

/// The twin patch of `--desired` and/or `--tags` (JSON objects); at least one is needed.
pub(crate) fn patch_args(desired: Option<&str>, tags: Option<&str>) -> Result<TwinPatch, String> {
    if desired.is_none() && tags.is_none() {
        return Err("give --desired and/or --tags".into());
    }
    let mut patch = TwinPatch::new();
    if let Some(desired) = desired {
        patch = patch
            .desired(json_arg("desired", desired)?)
            .map_err(|e| format!("--desired: {e}"))?;
    }
    if let Some(tags) = tags {
        patch = patch
            .tags(json_arg("tags", tags)?)
            .map_err(|e| format!("--tags: {e}"))?;
    }
    Ok(patch)
}

fn json_arg(name: &str, text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("--{name} is not valid JSON: {e}"))
}

pub(crate) async fn run(command: TwinCommand) -> Result<(), String> {
    match command {
        TwinCommand::Show(args) => {
            let hub = args.hub.resolve()?;
            let twin = match &args.module_id {
                Some(module) => hub.service.get_module_twin(&args.device_id, module).await,
                None => hub.service.get_twin(&args.device_id).await,
            }
            .map_err(|e| e.to_string())?;
            print_json(&twin)
        }
        TwinCommand::Update(args) => {
            let patch = patch_args(args.desired.as_deref(), args.tags.as_deref())?;
            let hub = args.hub.resolve()?;
            let condition = IfMatch::etag_or_any(args.etag.as_deref());
            let twin = match &args.module_id {
                Some(module) => {
                    hub.service
                        .update_module_twin(&args.device_id, module, &patch, condition)
                        .await
                }
                None => {
                    hub.service
                        .update_twin(&args.device_id, &patch, condition)
                        .await
                }
            }
            .map_err(|e| e.to_string())?;
            print_json(&twin)
        }
    }
}

/// `azure-iot query`: one JSON item per line.
pub(crate) async fn query(args: QueryArgs) -> Result<(), String> {
    let hub = args.hub.resolve()?;
    let mut items = hub
        .service
        .query(&args.query_command)
        .page_size(args.page_size)
        .into_stream();
    let mut printed = 0;
    while args.top.is_none_or(|top| printed < top) {
        match items.try_next().await.map_err(|e| e.to_string())? {
            Some(item) => print_line(&item.to_string())?,
            None => break,
        }
        printed += 1;
    }
    Ok(())
}
