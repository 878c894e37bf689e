//! `azure-iot configuration ...`: automatic device management configurations (in the spirit
//! of `az iot hub configuration`), against the local emulator or any hub.

use std::collections::BTreeMap;

use azure_iot_service::{Configuration, ConfigurationContent, IfMatch};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::print_json;
use crate::target::HubArgs;

#[derive(Subcommand)]
pub(crate) enum ConfigurationCommand {
    /// Create a configuration that writes desired properties into the twins it targets.
    Create(CreateArgs),
    /// Show a configuration with its system and custom metrics.
    Show(IdArgs),
    /// List configurations.
    List(ListArgs),
    /// Delete a configuration (its twins fall back to the next one in line).
    Delete(DeleteArgs),
}

#[derive(Args)]
pub(crate) struct CreateArgs {
    /// The configuration id (lowercase letters, digits, - + % _ * ! ').
    #[arg(long = "config-id", short = 'c')]
    config_id: String,
    /// The content: JSON text or a file holding it, either
    /// `{"deviceContent": {"properties.desired.x": …}}` (or `moduleContent`) or the same
    /// wrapped in `{"content": …}`.
    #[arg(long)]
    content: String,
    /// Which twins: a condition such as "tags.site='north'", or '*' for all.
    #[arg(long)]
    target_condition: String,
    /// Among configurations targeting a twin, the highest priority wins.
    #[arg(long, default_value_t = 0)]
    priority: i32,
    /// Custom metrics: JSON text or a file, `{"name": "SELECT deviceId FROM devices WHERE …"}`
    /// (or `{"queries": {…}}`, or `{"metrics": {"queries": {…}}}` as `az` writes it).
    #[arg(long)]
    metrics: Option<String>,
    /// Labels: a JSON object of strings.
    #[arg(long)]
    labels: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
}

#[derive(Args)]
pub(crate) struct IdArgs {
    /// The configuration id.
    #[arg(long = "config-id", short = 'c')]
    config_id: String,
    #[command(flatten)]
    hub: HubArgs,
}

#[derive(Args)]
pub(crate) struct ListArgs {
    /// At most this many configurations (the hub holds at most 100).
    #[arg(long, default_value_t = 100)]
    top: u32,
    #[command(flatten)]
    hub: HubArgs,
}

#[derive(Args)]
pub(crate) struct DeleteArgs {
    /// The configuration id.
    #[arg(long = "config-id", short = 'c')]
    config_id: String,
    /// Only if the configuration still has this ETag.
    #[arg(long)]
    etag: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
}

/// JSON given inline (starting with `{`) or as a file name.
fn json_or_file(name: &str, text: &str) -> Result<Value, String> {
    let trimmed = text.trim_start();
    let json = if trimmed.starts_with('{') {
        trimmed.to_owned()
    } else {
        std::fs::read_to_string(text).map_err(|e| format!("--{name}: cannot read {text}: {e}"))?
    };
    serde_json::from_str(&json).map_err(|e| format!("--{name} is not valid JSON: {e}"))
}

/// `value`, or its member `key` when it is wrapped in one.
fn unwrap_member(value: Value, key: &str) -> Value {
    match value {
        Value::Object(mut map) if map.len() == 1 && map.contains_key(key) => {
            map.remove(key).unwrap_or_default()
        }
        other => other,
    }
}

fn configuration(args: &CreateArgs) -> Result<Configuration, String> {
    let content = unwrap_member(json_or_file("content", &args.content)?, "content");
    let content: ConfigurationContent = serde_json::from_value(content)
        .map_err(|e| format!("--content is not configuration content: {e}"))?;
    let mut config = Configuration::new(&args.config_id, &args.target_condition, args.priority);
    config.content = content;
    if let Some(metrics) = &args.metrics {
        let metrics = unwrap_member(json_or_file("metrics", metrics)?, "metrics");
        let queries = unwrap_member(metrics, "queries");
        config.metrics.queries = serde_json::from_value::<BTreeMap<String, String>>(queries)
            .map_err(|e| format!("--metrics must map names to query strings: {e}"))?;
    }
    if let Some(labels) = &args.labels {
        config.labels = serde_json::from_value(json_or_file("labels", labels)?)
            .map_err(|e| format!("--labels must map names to strings: {e}"))?;
    }
    Ok(config)
}

pub(crate) async fn run(command: ConfigurationCommand) -> Result<(), String> {
    match command {
        ConfigurationCommand::Create(args) => {
            let config = configuration(&args)?;
            let hub = args.hub.resolve()?;
            let created = hub
                .service
                .create_configuration(&config)
                .await
                .map_err(|e| e.to_string())?;
            print_json(&created)
        }
        ConfigurationCommand::Show(args) => {
            let hub = args.hub.resolve()?;
            let config = hub
                .service
                .get_configuration(&args.config_id)
                .await
                .map_err(|e| e.to_string())?;
            print_json(&config)
        }
        ConfigurationCommand::List(args) => {
            let hub = args.hub.resolve()?;
            let configs = hub
                .service
                .list_configurations(args.top)
                .await
                .map_err(|e| e.to_string())?;
            print_json(&configs)
        }
        ConfigurationCommand::Delete(args) => {
            let hub = args.hub.resolve()?;
            hub.service
                .delete_configuration(&args.config_id, IfMatch::etag_or_any(args.etag.as_deref()))
                .await
                .map_err(|e| e.to_string())
        }
    }
}
