//! `azure-iot hub monitor-events`: device-to-cloud messages read from the hub's built-in
//! Event Hubs-compatible endpoint with the service crate's
//! `EventHubConsumer`, like `az iot hub monitor-events`.
//!
//! Which endpoint, in order:
//!
//! * `--connection-string` (or `IOTHUB_CONNECTION_STRING`): an Event Hubs string
//!   (`Endpoint=sb://…;EntityPath=…`) is read as it is; a hub policy string
//!   (`HostName=…`) is followed through the redirect IoT Hub answers with. The emulator's CA
//!   and AMQP port come from `--data-dir` when its host is the emulator's, `--ca-file`
//!   otherwise.
//! * else the emulator in `--data-dir`: the `event_hubs` connection string its `hub.json`
//!   announces (or, from an emulator that has none, its iothubowner string and the redirect).
//!
//! `--emulator-api` reads the emulator's own `/$emulator/telemetry` log over HTTPS instead
//! (the log-wide order and `--partition` as a log partition number).
//!
//! Output: text blocks (`event #… from {device} at {time} (partition …, offset …):`, the
//! body, then what `--properties` asks for) or one JSON object per event with `deviceId`,
//! `moduleId`, `partition`, `sequenceNumber`, `offset`, `enqueuedTime`, `messageSource`,
//! `body` (or `bodyBase64`), `properties` (application properties as text),
//! `typedProperties` (`{name, type, value}`), `systemProperties` and `annotations`.

use std::io::Write as _;
use std::time::Duration;

use azure_iot_core::ServiceConnectionString;
use azure_iot_service::events::annotations;
use azure_iot_service::{
    EventHubConsumer, EventHubConsumerOptions, EventPosition, PropertyValue, ReceivedEvent,
};
use base64::Engine as _;
use clap::{Args, ValueEnum};
use serde_json::{Map, Value, json};

use crate::monitor::Output;
use crate::target::{DataDir, HubArgs, read_ca_file, read_local};

/// What `--properties` shows (text output; JSON always carries everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Shown {
    /// Application properties, with their AMQP types.
    App,
    /// System properties (the AMQP properties section and IoT Hub's connection properties).
    Sys,
    /// Every message annotation (x-opt-*, iothub-*).
    Anno,
    /// All of the above.
    All,
}

#[derive(Args)]
pub(crate) struct MonitorArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// Only messages from this device.
    #[arg(long)]
    device_id: Option<String>,
    /// Only messages from this module (of --device-id or any device).
    #[arg(long)]
    module_id: Option<String>,
    /// The consumer group to read in.
    #[arg(long, visible_alias = "cg", default_value = "$Default")]
    consumer_group: String,
    /// Only this partition (an Event Hubs partition id: 0, 1, …).
    #[arg(long)]
    partition: Option<String>,
    /// Start at the oldest retained event instead of now.
    #[arg(long, conflicts_with_all = ["start_sequence_number", "start_offset", "start_time"])]
    from_start: bool,
    /// Start after the event with this sequence number (in every partition read).
    #[arg(long, conflicts_with_all = ["start_offset", "start_time"])]
    start_sequence_number: Option<i64>,
    /// Start after the event at this offset (in every partition read).
    #[arg(long, conflicts_with = "start_time")]
    start_offset: Option<String>,
    /// Start with events enqueued after this time (RFC 3339, e.g. 2026-12-03T10:00:00Z).
    #[arg(long)]
    start_time: Option<String>,
    /// What to show besides the body: app, sys, anno or all (text output).
    #[arg(long, short = 'p', value_enum, num_args = 1.., value_delimiter = ',')]
    properties: Vec<Shown>,
    /// Only events with this iothub-message-source (Telemetry, twinChangeEvents,
    /// deviceLifecycleEvents, deviceConnectionStateEvents), case-insensitive.
    #[arg(long)]
    message_source: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Stop after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Read the emulator's own telemetry log over HTTPS (`/$emulator/telemetry`) instead of
    /// the Event Hubs-compatible endpoint.
    #[arg(long)]
    emulator_api: bool,
}

pub(crate) async fn monitor_events(args: MonitorArgs) -> Result<(), String> {
    if args.emulator_api {
        let partition = match &args.partition {
            Some(p) => Some(
                p.parse::<u32>()
                    .map_err(|_| format!("--partition {p}: not a log partition number"))?,
            ),
            None => None,
        };
        return crate::monitor::monitor_events_http(crate::monitor::HttpMonitor {
            data_dir: args.hub.data_dir.clone(),
            device_id: args.device_id.clone(),
            partition,
            output: args.output,
            from_start: args.from_start,
            timeout: args.timeout,
            count: args.count,
        })
        .await;
    }
    let start = start_position(&args)?;
    let read = async {
        let consumer = consumer(&args).await?;
        let mut events = match &args.partition {
            Some(p) => consumer.receive_partition(p, start).await,
            None => consumer.receive_all(start).await,
        }
        .map_err(|e| e.to_string())?;
        if args.output == Output::Text {
            eprintln!(
                "Monitoring telemetry{} on {}/{} (consumer group {}). Press Ctrl-C to stop.",
                args.device_id
                    .as_deref()
                    .map(|d| format!(" from {d}"))
                    .unwrap_or_default(),
                consumer.host(),
                consumer.event_hub_name(),
                consumer.consumer_group()
            );
        }
        let mut seen = 0u64;
        while args.count.is_none_or(|c| seen < c) {
            let Some(event) = events.next_event().await else {
                break;
            };
            let event = event.map_err(|e| e.to_string())?;
            if !wanted(&args, &event) {
                continue;
            }
            print_event(&event, &args);
            seen += 1;
        }
        Ok::<(), String>(())
    };
    match args.timeout {
        Some(seconds) => tokio::time::timeout(Duration::from_secs(seconds), read)
            .await
            .unwrap_or(Ok(())),
        None => read.await,
    }
}

/// `--from-start`, `--start-*`, or now.
fn start_position(args: &MonitorArgs) -> Result<EventPosition, String> {
    if args.from_start {
        return Ok(EventPosition::Earliest);
    }
    if let Some(n) = args.start_sequence_number {
        return Ok(EventPosition::after_sequence_number(n));
    }
    if let Some(offset) = &args.start_offset {
        return Ok(EventPosition::Offset {
            offset: offset.clone(),
            inclusive: false,
        });
    }
    if let Some(at) = &args.start_time {
        let at = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("--start-time {at}: not an RFC 3339 time ({e})"))?;
        return Ok(EventPosition::EnqueuedTime(at));
    }
    Ok(EventPosition::Latest)
}

/// The consumer the arguments name (see the module docs).
async fn consumer(args: &MonitorArgs) -> Result<EventHubConsumer, String> {
    let given_ca = read_ca_file(args.hub.ca_file.as_deref())?;
    let mut options = EventHubConsumerOptions::default().consumer_group(&args.consumer_group);
    let open = |e: azure_iot_service::Error| e.to_string();
    match &args.hub.connection_string {
        Some(cs) if cs.contains("Endpoint=") => {
            let parsed = azure_iot_core::EventHubConnectionString::parse(cs)
                .map_err(|e| format!("--connection-string: {e}"))?;
            let local_ca = read_local(&args.hub.data_dir)
                .ok()
                .filter(|l| l.host.eq_ignore_ascii_case(parsed.host()))
                .map(|l| l.ca_pem);
            if let Some(pem) = given_ca.or(local_ca) {
                options = options.trusted_ca_pem(pem);
            }
            EventHubConsumer::from_event_hub(&parsed, options).map_err(open)
        }
        Some(cs) => {
            let parsed = ServiceConnectionString::parse(cs)
                .map_err(|e| format!("--connection-string: {e}"))?;
            let local = read_local(&args.hub.data_dir)
                .ok()
                .filter(|l| l.host.eq_ignore_ascii_case(parsed.host_name()));
            let mut ca = given_ca;
            if let Some(local) = local {
                options = options.hub_amqp_port(local.amqp);
                ca.get_or_insert(local.ca_pem);
            }
            if let Some(pem) = ca {
                options = options.trusted_ca_pem(pem);
            }
            EventHubConsumer::from_iot_hub(&parsed, options)
                .await
                .map_err(open)
        }
        None => {
            let data = DataDir::read(&args.hub.data_dir).map_err(|e| {
                format!(
                    "no hub given and no emulator found: {e} Or pass --connection-string \
                     (or set IOTHUB_CONNECTION_STRING)."
                )
            })?;
            options = options.trusted_ca_pem(given_ca.unwrap_or_else(|| data.ca_pem.clone()));
            let announced = data.doc["event_hubs"]["connection_strings"]["iothubowner"]
                .as_str()
                .or_else(|| data.doc["event_hubs"]["connection_string"].as_str());
            match announced {
                Some(cs) => {
                    let parsed = azure_iot_core::EventHubConnectionString::parse(cs)
                        .map_err(|e| format!("{}: event_hubs: {e}", data.file.display()))?;
                    EventHubConsumer::from_event_hub(&parsed, options).map_err(open)
                }
                None => {
                    let owner =
                        ServiceConnectionString::parse(&data.connection_string("iothubowner")?)
                            .map_err(|e| format!("{}: {e}", data.file.display()))?;
                    options = options.hub_amqp_port(data.port("amqp")?);
                    EventHubConsumer::from_iot_hub(&owner, options)
                        .await
                        .map_err(open)
                }
            }
        }
    }
}

/// Whether `--device-id`, `--module-id` and `--message-source` let `event` through.
fn wanted(args: &MonitorArgs, event: &ReceivedEvent) -> bool {
    args.device_id
        .as_deref()
        .is_none_or(|d| event.device_id() == Some(d))
        && args
            .module_id
            .as_deref()
            .is_none_or(|m| event.module_id() == Some(m))
        && args.message_source.as_deref().is_none_or(|s| {
            event
                .message_source()
                .is_some_and(|source| source.eq_ignore_ascii_case(s))
        })
}

/// IoT Hub annotations shown as system properties, with the JSON names the emulator's
/// telemetry API uses.
const SYSTEM_ANNOTATIONS: [(&str, &str); 8] = [
    (annotations::DEVICE_ID, "connectionDeviceId"),
    (annotations::MODULE_ID, "connectionModuleId"),
    ("iothub-connection-auth-method", "connectionAuthMethod"),
    (
        "iothub-connection-auth-generation-id",
        "connectionAuthGenerationId",
    ),
    (annotations::HUB_ENQUEUED_TIME, "enqueuedTime"),
    ("dt-subject", "componentName"),
    ("dt-dataschema", "messageSchema"),
    ("iothub-interface-id", "interfaceId"),
];

/// The properties section's fields, with the same JSON names.
const SYSTEM_PROPERTIES: [(&str, &str); 8] = [
    ("message-id", "messageId"),
    ("correlation-id", "correlationId"),
    ("user-id", "userId"),
    ("to", "to"),
    ("content-type", "contentType"),
    ("content-encoding", "contentEncoding"),
    ("absolute-expiry-time", "expiryTimeUtc"),
    ("creation-time", "creationTimeUtc"),
];

fn system_properties(event: &ReceivedEvent) -> Map<String, Value> {
    let mut system = Map::new();
    for (name, value) in &event.system_properties {
        let key = SYSTEM_PROPERTIES
            .iter()
            .find(|(n, _)| n == name)
            .map_or(name.as_str(), |(_, k)| k);
        system.insert(key.to_owned(), json!(value.to_string()));
    }
    for (name, key) in SYSTEM_ANNOTATIONS {
        if let Some(value) = event.annotation(name) {
            system.insert(key.to_owned(), json!(value.to_string()));
        }
    }
    system
}

fn typed(pairs: &[(String, PropertyValue)]) -> Vec<Value> {
    pairs
        .iter()
        .map(|(name, value)| json!({"name": name, "type": value.type_name(), "value": value.to_json()}))
        .collect()
}

/// One event as JSON (see the module docs).
fn event_json(event: &ReceivedEvent) -> Value {
    let properties: Map<String, Value> = event
        .application_properties
        .iter()
        .map(|(k, v)| (k.clone(), json!(v.to_string())))
        .collect();
    let annotations: Map<String, Value> = event
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    let partition = event
        .partition_id
        .parse::<u64>()
        .map_or_else(|_| json!(event.partition_id), |p| json!(p));
    let mut out = json!({
        "deviceId": event.device_id(),
        "moduleId": event.module_id(),
        "partition": partition,
        "sequenceNumber": event.sequence_number,
        "offset": event.offset,
        "enqueuedTime": event.enqueued_time.map(azure_iot_core::datetime::format_timestamp),
        "messageSource": event.message_source(),
        "properties": properties,
        "typedProperties": typed(&event.application_properties),
        "systemProperties": system_properties(event),
        "annotations": annotations,
    });
    if let Some(map) = out.as_object_mut() {
        match std::str::from_utf8(&event.body) {
            Ok(text) => map.insert("body".into(), json!(text)),
            Err(_) => map.insert(
                "bodyBase64".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(&event.body)),
            ),
        };
    }
    out
}

fn print_event(event: &ReceivedEvent, args: &MonitorArgs) {
    let mut out = std::io::stdout().lock();
    if args.output == Output::Json {
        let _ = writeln!(out, "{}", event_json(event));
        let _ = out.flush();
        return;
    }
    let from = match (event.device_id(), event.module_id()) {
        (Some(d), Some(m)) => format!("{d}/{m}"),
        (Some(d), None) => d.to_owned(),
        _ => "?".to_owned(),
    };
    let at = event.enqueued_time.map_or_else(
        || "?".to_owned(),
        azure_iot_core::datetime::format_timestamp,
    );
    let _ = writeln!(
        out,
        "event #{} from {from} at {at} (partition {}, offset {}):",
        event.sequence_number,
        event.partition_id,
        event.offset.as_deref().unwrap_or("?")
    );
    if let Some(source) = event.message_source().filter(|s| *s != "Telemetry") {
        let _ = writeln!(out, "  message source: {source}");
    }
    match std::str::from_utf8(&event.body) {
        Ok(text) => {
            let _ = writeln!(out, "  body: {text}");
        }
        Err(_) => {
            let _ = writeln!(
                out,
                "  body (base64): {}",
                base64::engine::general_purpose::STANDARD.encode(&event.body)
            );
        }
    }
    let shows =
        |what: Shown| args.properties.contains(&what) || args.properties.contains(&Shown::All);
    if shows(Shown::App) && !event.application_properties.is_empty() {
        let _ = writeln!(out, "  application properties:");
        for (k, v) in &event.application_properties {
            let _ = writeln!(out, "    {k} ({}): {v}", v.type_name());
        }
    }
    if shows(Shown::Sys) {
        let system = system_properties(event);
        if !system.is_empty() {
            let _ = writeln!(out, "  system properties:");
            for (k, v) in &system {
                let _ = writeln!(out, "    {k}: {}", v.as_str().unwrap_or_default());
            }
        }
    }
    if shows(Shown::Anno) && !event.annotations.is_empty() {
        let _ = writeln!(out, "  annotations:");
        for (k, v) in &event.annotations {
            let _ = writeln!(out, "    {k} ({}): {v}", v.type_name());
        }
    }
    let _ = out.flush();
}
