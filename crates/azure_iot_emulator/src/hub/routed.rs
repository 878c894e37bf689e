//! The hub's own notifications on the built-in endpoint (ADR 24): twin change, device
//! lifecycle and connection-state events, as IoT Hub routes them when a route with their
//! source sends them to the built-in `events` endpoint.
//!
//! ```text
//!  state thread: put_identity / bulk / provisioning ─┐
//!                delete_identity (forget) ───────────┤ emit_* (one place per kind)
//!                twin writes (service, jobs, configs)┤──▶ TelemetryLog::append_from_thread
//!                reported patches (device core) ─────┤     (same bounded queue, same durable
//!                connect_device / disconnect_device ─┘      log, partitioned by device id)
//! ```
//!
//! * **Off by default.** On IoT Hub these events reach the built-in endpoint only through a
//!   route with their source; [`EventRoutes`] says which sources the emulator routes there
//!   (`azure-iot hub start --route-events …`, recorded in `hub.json`).
//! * **Emitted once, by the hub.** Every kind is emitted from the one state-thread operation
//!   that makes the change, after it is committed: whatever front-end (HTTPS, MQTT, AMQP,
//!   DPS, jobs, configurations) caused it, there is exactly one event per operation.
//! * **Stamped as IoT Hub stamps them**: application properties `hubName`, `deviceId`,
//!   `moduleId` (module events only), `operationTimestamp`, `iothub-message-schema`, `opType`
//!   (all strings); system properties `content-type` `application/json`, `content-encoding`
//!   `utf-8`, a unique `correlation-id`, `user-id` = the hub's name; the log keeps the source
//!   (`iothub-message-source`), and the Event Hubs endpoint stamps the connection ids and
//!   enqueued times like telemetry's.
//! * **Bounded.** The state thread waits for room in the log's bounded queue like a device
//!   connection does; nothing is buffered here.

use std::str::FromStr;

use azure_iot_core::message::SystemProperties;
use azure_iot_protocol::Identity;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::HubState;
use super::identity::IdentityRecord;
use super::state::{TwinChange, now};
use super::twin::TwinState;
use crate::error::EmulatorError;
use crate::telemetry::{MessageSource, NewEvent, PropertyValue, TelemetryLog};

/// Which of the hub's notifications go to the built-in endpoint (IoT Hub's routes with the
/// sources `TwinChangeEvents`, `DeviceLifecycleEvents`, `DeviceConnectionStateEvents` and the
/// `events` endpoint). Default: none, as on a new IoT hub.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventRoutes {
    twin_change: bool,
    lifecycle: bool,
    connection_state: bool,
}

/// The names `--route-events` takes, with the source each enables.
const ROUTE_NAMES: [(&str, MessageSource); 3] = [
    ("twin-change", MessageSource::TwinChangeEvents),
    ("lifecycle", MessageSource::DeviceLifecycleEvents),
    (
        "connection-state",
        MessageSource::DeviceConnectionStateEvents,
    ),
];

impl EventRoutes {
    /// No notifications routed (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// All three kinds routed.
    pub fn all() -> Self {
        Self {
            twin_change: true,
            lifecycle: true,
            connection_state: true,
        }
    }

    /// Routes twin change events (`twinChangeEvents`) or not.
    pub fn twin_change(mut self, on: bool) -> Self {
        self.twin_change = on;
        self
    }

    /// Routes device lifecycle events (`deviceLifecycleEvents`) or not.
    pub fn lifecycle(mut self, on: bool) -> Self {
        self.lifecycle = on;
        self
    }

    /// Routes device connection-state events (`deviceConnectionStateEvents`) or not.
    pub fn connection_state(mut self, on: bool) -> Self {
        self.connection_state = on;
        self
    }

    /// Whether events of `source` are routed (telemetry always is).
    pub fn routes(&self, source: MessageSource) -> bool {
        match source {
            MessageSource::TwinChangeEvents => self.twin_change,
            MessageSource::DeviceLifecycleEvents => self.lifecycle,
            MessageSource::DeviceConnectionStateEvents => self.connection_state,
            _ => true,
        }
    }

    /// The `iothub-message-source` names of the routed notifications, for `hub.json`.
    pub fn sources(&self) -> Vec<&'static str> {
        ROUTE_NAMES
            .iter()
            .filter(|(_, source)| self.routes(*source))
            .map(|(_, source)| source.as_str())
            .collect()
    }
}

impl FromStr for EventRoutes {
    type Err = EmulatorError;

    /// `all`, `none`, or a comma-separated list of `twin-change`, `lifecycle`,
    /// `connection-state`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut routes = Self::none();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "all" => routes = Self::all(),
                "none" => {}
                _ => {
                    let (_, source) = ROUTE_NAMES
                        .iter()
                        .find(|(known, _)| *known == name)
                        .ok_or_else(|| {
                            EmulatorError::Config(format!(
                                "unknown event route `{name}`: use all, none, or twin-change, lifecycle, connection-state"
                            ))
                        })?;
                    routes = match source {
                        MessageSource::TwinChangeEvents => routes.twin_change(true),
                        MessageSource::DeviceLifecycleEvents => routes.lifecycle(true),
                        _ => routes.connection_state(true),
                    };
                }
            }
        }
        Ok(routes)
    }
}

/// Where the state thread sends its notifications; nothing goes anywhere until
/// [`HubState::route_events`] connects the log.
#[derive(Default)]
pub(crate) struct Router {
    routes: EventRoutes,
    log: Option<TelemetryLog>,
    hub_name: String,
}

/// A twin change event's `opType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TwinOp {
    /// A merge patch (service tags/desired, or a device's reported patch): `updateTwin`.
    Update,
    /// A service replace: `replaceTwin`.
    Replace,
}

impl HubState {
    /// Routes the notifications `routes` enables into `log`, stamped with `hub_name`.
    pub(crate) fn route_events(&mut self, routes: EventRoutes, log: TelemetryLog, hub_name: &str) {
        self.routed = Router {
            routes,
            log: Some(log),
            hub_name: hub_name.to_owned(),
        };
    }

    /// Whether events of `source` are to be emitted now.
    pub(super) fn routes(&self, source: MessageSource) -> bool {
        self.routed.log.is_some() && self.routed.routes.routes(source)
    }

    /// A twin change event for `record` (already changed): for an update, the body carries the
    /// new twin `version` and the written `tags` and property section with its `$metadata`
    /// and `$version`; for a replace, the whole twin.
    pub(super) fn emit_twin_change(
        &mut self,
        record: &IdentityRecord,
        op: TwinOp,
        tags: Option<&Map<String, Value>>,
        section: Option<(&str, &Map<String, Value>)>,
    ) {
        if !self.routes(MessageSource::TwinChangeEvents) {
            return;
        }
        let (op_type, body) = match op {
            TwinOp::Replace => ("replaceTwin", twin_document(record)),
            TwinOp::Update => ("updateTwin", update_body(&record.twin, tags, section)),
        };
        self.emit(
            MessageSource::TwinChangeEvents,
            "twinChangeNotification",
            op_type,
            &record.device_id,
            record.module_id.as_deref(),
            &body,
        );
    }

    /// The twin change event of a service write (`PATCH` or `PUT` of a twin, a job's or a
    /// configuration's patch): a replace carries the whole twin, a patch what it wrote.
    pub(super) fn emit_service_twin_change(
        &mut self,
        record: &IdentityRecord,
        change: &TwinChange,
    ) {
        if change.replace {
            self.emit_twin_change(record, TwinOp::Replace, None, None);
            return;
        }
        let tags = change.body.get("tags").and_then(Value::as_object);
        let desired = change
            .body
            .pointer("/properties/desired")
            .and_then(Value::as_object)
            .filter(|d| !d.is_empty());
        self.emit_twin_change(
            record,
            TwinOp::Update,
            tags,
            desired.map(|d| ("desired", d)),
        );
    }

    /// A lifecycle event: `createDeviceIdentity` / `deleteDeviceIdentity` with the twin.
    pub(super) fn emit_lifecycle(&mut self, record: &IdentityRecord, created: bool) {
        if !self.routes(MessageSource::DeviceLifecycleEvents) {
            return;
        }
        let op_type = if created {
            "createDeviceIdentity"
        } else {
            "deleteDeviceIdentity"
        };
        self.emit(
            MessageSource::DeviceLifecycleEvents,
            "deviceLifecycleNotification",
            op_type,
            &record.device_id,
            record.module_id.as_deref(),
            &twin_document(record),
        );
    }

    /// A connection-state event: `deviceConnected` / `deviceDisconnected` with a strictly
    /// increasing `sequenceNumber` (64 upper-case hex digits, so later events compare greater
    /// as strings, as the hub's do).
    pub(super) fn emit_connection(&mut self, identity: &Identity, connected: bool) {
        if !self.routes(MessageSource::DeviceConnectionStateEvents) {
            return;
        }
        let op_type = if connected {
            "deviceConnected"
        } else {
            "deviceDisconnected"
        };
        let body = json!({ "sequenceNumber": format!("{:064X}", self.next_sequence()) });
        self.emit(
            MessageSource::DeviceConnectionStateEvents,
            "deviceConnectionStateNotification",
            op_type,
            identity.device_id(),
            identity.module_id(),
            &body,
        );
    }

    /// Stamps and appends one notification.
    fn emit(
        &mut self,
        source: MessageSource,
        schema: &str,
        op_type: &str,
        device_id: &str,
        module_id: Option<&str>,
        body: &Value,
    ) {
        let correlation_id = format!("{:x}", self.next_sequence());
        let Some(log) = &self.routed.log else {
            return;
        };
        let at = now();
        let hub_name = self.routed.hub_name.clone();
        let mut system = SystemProperties::default();
        system.content_type = Some("application/json".into());
        system.content_encoding = Some("utf-8".into());
        system.correlation_id = Some(correlation_id);
        system.user_id = Some(hub_name.clone());
        let text = |v: &str| PropertyValue::String(v.to_owned());
        let mut properties = vec![
            ("hubName".to_owned(), text(&hub_name)),
            ("deviceId".to_owned(), text(device_id)),
        ];
        if let Some(module) = module_id {
            properties.push(("moduleId".to_owned(), text(module)));
        }
        properties.extend([
            ("operationTimestamp".to_owned(), text(&at)),
            ("iothub-message-schema".to_owned(), text(schema)),
            ("opType".to_owned(), text(op_type)),
        ]);
        log.append_from_thread(NewEvent {
            device_id: device_id.to_owned(),
            module_id: module_id.map(str::to_owned),
            auth_method: String::new(),
            enqueued_time: at,
            system,
            properties,
            body: Bytes::from(body.to_string().into_bytes()),
            source,
        });
    }
}

/// The twin as lifecycle and replace events carry it: ids, twin `etag`, `version`, `tags`
/// (when any) and both property sections with `$metadata` and `$version`.
fn twin_document(record: &IdentityRecord) -> Value {
    let mut doc = Map::new();
    doc.insert("deviceId".into(), json!(record.device_id));
    if let Some(module) = &record.module_id {
        doc.insert("moduleId".into(), json!(module));
    }
    doc.insert("etag".into(), json!(record.twin.etag()));
    doc.insert("version".into(), json!(record.twin.version));
    if !record.twin.tags.is_empty() {
        doc.insert("tags".into(), Value::Object(record.twin.tags.clone()));
    }
    doc.insert("properties".into(), record.twin.properties_json(true));
    Value::Object(doc)
}

/// An `updateTwin` body: the new twin `version`, the written tags, and the written section
/// (`desired` or `reported`) with the `$metadata` of what was written and the section's new
/// `$version`.
fn update_body(
    twin: &TwinState,
    tags: Option<&Map<String, Value>>,
    section: Option<(&str, &Map<String, Value>)>,
) -> Value {
    let mut body = Map::new();
    body.insert("version".into(), json!(twin.version));
    if let Some(tags) = tags {
        body.insert("tags".into(), Value::Object(tags.clone()));
    }
    if let Some((name, patch)) = section {
        let (metadata, version) = if name == "desired" {
            (&twin.desired_metadata, twin.desired_version)
        } else {
            (&twin.reported_metadata, twin.reported_version)
        };
        let mut out: Map<String, Value> = patch
            .iter()
            .filter(|(k, _)| !k.starts_with('$'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let written: Map<String, Value> = metadata
            .iter()
            .filter(|(k, _)| k.starts_with('$') || out.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.insert("$metadata".into(), Value::Object(written));
        out.insert("$version".into(), json!(version));
        body.insert("properties".into(), json!({ name: Value::Object(out) }));
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests;
