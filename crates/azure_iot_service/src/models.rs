//! What the registry API reads and writes: device and module identities, bulk operations,
//! statistics. Twins and method calls use the core crate's types
//! ([`Twin`](azure_iot_core::twin::Twin), [`DirectMethodRequest`](azure_iot_core::method::DirectMethodRequest)).
//!
//! Every struct keeps the members it does not model in `other`, so a get → change → update
//! round trip never drops a field the hub added.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Whether an identity may connect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceStatus {
    /// It may connect (the default).
    #[default]
    Enabled,
    /// Its connections are refused.
    Disabled,
}

/// Whether an identity is connected, as the hub last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceConnectionState {
    /// Connected now.
    Connected,
    /// Not connected.
    #[default]
    Disconnected,
}

/// How an identity authenticates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthenticationType {
    /// Shared access keys.
    #[default]
    Sas,
    /// A self-signed X.509 certificate, matched by thumbprint.
    SelfSigned,
    /// An X.509 certificate signed by a CA registered with the hub.
    CertificateAuthority,
    /// No credentials of its own (a module that authenticates through IoT Edge).
    None,
}

/// A string member that may be `null`, read as empty: the hub answers
/// `"symmetricKey": {"primaryKey": null, …}` for an X.509 identity, and a feedback record of a
/// message sent without an id has a `null` id (one odd record must not make its whole batch
/// unreadable).
pub(crate) fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// A pair of shared access keys (base64).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKey {
    /// The primary key; empty on create asks the hub to generate one.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub primary_key: String,
    /// The secondary key; empty on create asks the hub to generate one.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub secondary_key: String,
}

impl std::fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |k: &str| if k.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("SymmetricKey")
            .field("primary_key", &shown(&self.primary_key))
            .field("secondary_key", &shown(&self.secondary_key))
            .finish()
    }
}

/// X.509 thumbprints (hex SHA-1 or SHA-256) of self-signed certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Thumbprint {
    /// The primary certificate's thumbprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_thumbprint: Option<String>,
    /// The secondary certificate's thumbprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_thumbprint: Option<String>,
}

/// An identity's credentials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationMechanism {
    /// Which credential the identity uses.
    #[serde(rename = "type", default)]
    pub kind: AuthenticationType,
    /// Its keys, for [`AuthenticationType::Sas`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<SymmetricKey>,
    /// Its thumbprints, for [`AuthenticationType::SelfSigned`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509_thumbprint: Option<X509Thumbprint>,
}

/// What a device can do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCapabilities {
    /// Whether the device is an IoT Edge device.
    #[serde(default)]
    pub iot_edge: bool,
}

/// A device identity in the hub's registry.
///
/// `Debug` never shows keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Device {
    /// The device id (case-sensitive, at most 128 characters).
    pub device_id: String,
    /// Assigned by the hub; changes when a device is deleted and created again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_id: Option<String>,
    /// The identity's ETag, for conditional updates and deletes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Whether the device may connect.
    #[serde(default)]
    pub status: DeviceStatus,
    /// Why the device has its status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// When the status last changed (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_updated_time: Option<String>,
    /// Whether the device is connected.
    #[serde(default)]
    pub connection_state: DeviceConnectionState,
    /// When the connection state last changed (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state_updated_time: Option<String>,
    /// When the device last connected or sent a message (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<String>,
    /// Cloud-to-device messages waiting for the device.
    #[serde(default)]
    pub cloud_to_device_message_count: i64,
    /// The device's credentials.
    #[serde(default)]
    pub authentication: AuthenticationMechanism,
    /// What the device can do.
    #[serde(default)]
    pub capabilities: DeviceCapabilities,
    /// The IoT Edge scope of the device (edge hierarchies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    /// The scopes of the device's parents (edge hierarchies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_scopes: Option<Vec<String>>,
    /// Members this crate does not model.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Device {
    /// A device that authenticates with keys the hub generates.
    pub fn new(device_id: impl Into<String>) -> Self {
        Self {
            device_id: device_id.into(),
            generation_id: None,
            etag: None,
            status: DeviceStatus::Enabled,
            status_reason: None,
            status_updated_time: None,
            connection_state: DeviceConnectionState::Disconnected,
            connection_state_updated_time: None,
            last_activity_time: None,
            cloud_to_device_message_count: 0,
            authentication: AuthenticationMechanism::default(),
            capabilities: DeviceCapabilities::default(),
            device_scope: None,
            parent_scopes: None,
            other: Map::new(),
        }
    }

    /// Uses these keys (base64) instead of generated ones.
    pub fn with_symmetric_key(
        mut self,
        primary_key: impl Into<String>,
        secondary_key: impl Into<String>,
    ) -> Self {
        self.authentication = AuthenticationMechanism {
            kind: AuthenticationType::Sas,
            symmetric_key: Some(SymmetricKey {
                primary_key: primary_key.into(),
                secondary_key: secondary_key.into(),
            }),
            x509_thumbprint: None,
        };
        self
    }

    /// Authenticates with self-signed certificates of these thumbprints (hex).
    pub fn with_x509_thumbprints(
        mut self,
        primary: impl Into<String>,
        secondary: Option<String>,
    ) -> Self {
        self.authentication = AuthenticationMechanism {
            kind: AuthenticationType::SelfSigned,
            symmetric_key: None,
            x509_thumbprint: Some(X509Thumbprint {
                primary_thumbprint: Some(primary.into()),
                secondary_thumbprint: secondary,
            }),
        };
        self
    }

    /// Authenticates with a certificate signed by a CA registered with the hub.
    pub fn with_certificate_authority(mut self) -> Self {
        self.authentication = AuthenticationMechanism {
            kind: AuthenticationType::CertificateAuthority,
            symmetric_key: None,
            x509_thumbprint: None,
        };
        self
    }

    /// Sets the status (and optionally why).
    pub fn with_status(mut self, status: DeviceStatus, reason: Option<String>) -> Self {
        self.status = status;
        self.status_reason = reason;
        self
    }

    /// Marks the device as an IoT Edge device.
    pub fn with_iot_edge(mut self, iot_edge: bool) -> Self {
        self.capabilities.iot_edge = iot_edge;
        self
    }

    /// The primary key, if the device authenticates with keys.
    pub fn primary_key(&self) -> Option<&str> {
        self.authentication
            .symmetric_key
            .as_ref()
            .map(|k| k.primary_key.as_str())
            .filter(|k| !k.is_empty())
    }
}

/// A module identity of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Module {
    /// The device the module belongs to.
    pub device_id: String,
    /// The module id.
    pub module_id: String,
    /// Who manages the module (`IotEdge` for modules deployed by IoT Edge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    /// Assigned by the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_id: Option<String>,
    /// The identity's ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Whether the module is connected.
    #[serde(default)]
    pub connection_state: DeviceConnectionState,
    /// When the connection state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state_updated_time: Option<String>,
    /// When the module last connected or sent a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<String>,
    /// Cloud-to-device messages waiting for the module.
    #[serde(default)]
    pub cloud_to_device_message_count: i64,
    /// The module's credentials.
    #[serde(default)]
    pub authentication: AuthenticationMechanism,
    /// Members this crate does not model.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Module {
    /// A module that authenticates with keys the hub generates.
    pub fn new(device_id: impl Into<String>, module_id: impl Into<String>) -> Self {
        Self {
            device_id: device_id.into(),
            module_id: module_id.into(),
            managed_by: None,
            generation_id: None,
            etag: None,
            connection_state: DeviceConnectionState::Disconnected,
            connection_state_updated_time: None,
            last_activity_time: None,
            cloud_to_device_message_count: 0,
            authentication: AuthenticationMechanism::default(),
            other: Map::new(),
        }
    }

    /// Sets the credentials.
    pub fn with_authentication(mut self, authentication: AuthenticationMechanism) -> Self {
        self.authentication = authentication;
        self
    }

    /// The primary key, if the module authenticates with keys.
    pub fn primary_key(&self) -> Option<&str> {
        self.authentication
            .symmetric_key
            .as_ref()
            .map(|k| k.primary_key.as_str())
            .filter(|k| !k.is_empty())
    }
}

/// Which identity a bulk entry changes, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BulkMode {
    /// Create; fails for that entry if it exists.
    Create,
    /// Create or replace the identity.
    Update,
    /// Replace the identity if its ETag matches the entry's.
    UpdateIfMatchETag,
    /// Delete.
    Delete,
    /// Delete if its ETag matches the entry's.
    DeleteIfMatchETag,
}

impl BulkMode {
    fn wire(self) -> &'static str {
        match self {
            BulkMode::Create => "create",
            BulkMode::Update => "update",
            BulkMode::UpdateIfMatchETag => "updateIfMatchETag",
            BulkMode::Delete => "delete",
            BulkMode::DeleteIfMatchETag => "deleteIfMatchETag",
        }
    }
}

/// One entry of a bulk registry operation.
#[derive(Debug, Clone)]
pub struct BulkEntry {
    /// What to do.
    pub mode: BulkMode,
    /// The identity (its id, credentials, status, capabilities and, for the conditional modes,
    /// its ETag).
    pub device: Device,
}

impl BulkEntry {
    /// An entry doing `mode` to `device`.
    pub fn new(mode: BulkMode, device: Device) -> Self {
        Self { mode, device }
    }

    /// The entry as the hub's `ExportImportDevice` JSON.
    pub(crate) fn to_wire(&self) -> Value {
        let d = &self.device;
        let mut entry = Map::new();
        entry.insert("id".into(), Value::String(d.device_id.clone()));
        entry.insert("importMode".into(), Value::String(self.mode.wire().into()));
        if let Some(etag) = &d.etag {
            entry.insert("eTag".into(), Value::String(etag.clone()));
        }
        if !matches!(self.mode, BulkMode::Delete | BulkMode::DeleteIfMatchETag) {
            let json = |v: serde_json::Result<Value>| v.unwrap_or(Value::Null);
            entry.insert("status".into(), json(serde_json::to_value(d.status)));
            if let Some(reason) = &d.status_reason {
                entry.insert("statusReason".into(), Value::String(reason.clone()));
            }
            entry.insert(
                "authentication".into(),
                json(serde_json::to_value(&d.authentication)),
            );
            entry.insert(
                "capabilities".into(),
                json(serde_json::to_value(d.capabilities)),
            );
        }
        Value::Object(entry)
    }
}

/// The outcome of a bulk registry operation: which entries failed, and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct BulkResult {
    /// Whether every entry succeeded.
    pub is_successful: bool,
    /// One record per failed entry.
    #[serde(default)]
    pub errors: Vec<BulkError>,
    /// Warnings the hub gave.
    #[serde(default)]
    pub warnings: Vec<BulkWarning>,
}

/// A failed bulk entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct BulkError {
    /// The entry's device.
    pub device_id: String,
    /// The entry's module, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// The hub's error code name (`DeviceAlreadyExists`, ...).
    #[serde(default)]
    pub error_code: String,
    /// The hub's description.
    #[serde(default)]
    pub error_status: String,
}

/// A bulk warning.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct BulkWarning {
    /// The entry's device.
    pub device_id: String,
    /// The warning's code.
    #[serde(default)]
    pub warning_code: String,
    /// The hub's description.
    #[serde(default)]
    pub warning_status: String,
}

/// Identity counts of the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RegistryStatistics {
    /// All devices.
    pub total_device_count: i64,
    /// Enabled devices.
    pub enabled_device_count: i64,
    /// Disabled devices.
    pub disabled_device_count: i64,
}

/// Service statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ServiceStatistics {
    /// Devices connected now.
    pub connected_device_count: i64,
}

/// The answer to a purge of a device's cloud-to-device queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct PurgeResult {
    /// The device.
    pub device_id: String,
    /// How many messages were removed.
    pub total_messages_purged: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_device_round_trips_and_keeps_unknown_members() {
        let wire = json!({
            "deviceId": "d1", "generationId": "g", "etag": "e", "status": "disabled",
            "connectionState": "Connected", "cloudToDeviceMessageCount": 3,
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "cA==", "secondaryKey": "cw=="}},
            "capabilities": {"iotEdge": true}, "futureField": {"x": 1}
        });
        let device: Device = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(device.status, DeviceStatus::Disabled);
        assert_eq!(device.connection_state, DeviceConnectionState::Connected);
        assert!(device.capabilities.iot_edge);
        assert_eq!(device.primary_key(), Some("cA=="));
        assert!(!format!("{device:?}").contains("cA=="), "Debug hides keys");
        let back = serde_json::to_value(&device).unwrap();
        assert_eq!(back["futureField"], wire["futureField"]);
        assert_eq!(back["authentication"], wire["authentication"]);
    }

    #[test]
    fn an_x509_device_with_null_keys_reads() {
        // What the hub answers for a self-signed device: keys present but null.
        let wire = json!({
            "deviceId": "x1", "status": "enabled",
            "authentication": {"type": "selfSigned",
                "symmetricKey": {"primaryKey": null, "secondaryKey": null},
                "x509Thumbprint": {"primaryThumbprint": "AB", "secondaryThumbprint": null}}
        });
        let device: Device = serde_json::from_value(wire).unwrap();
        assert_eq!(device.authentication.kind, AuthenticationType::SelfSigned);
        assert_eq!(device.primary_key(), None);
        let thumbprint = device.authentication.x509_thumbprint.unwrap();
        assert_eq!(thumbprint.primary_thumbprint.as_deref(), Some("AB"));
    }

    #[test]
    fn bulk_entries_use_the_import_names() {
        let entry = BulkEntry::new(
            BulkMode::Create,
            Device::new("d1").with_x509_thumbprints("AB", None),
        );
        let wire = entry.to_wire();
        assert_eq!(wire["id"], "d1");
        assert_eq!(wire["importMode"], "create");
        assert_eq!(wire["authentication"]["type"], "selfSigned");
        let delete = BulkEntry::new(BulkMode::DeleteIfMatchETag, Device::new("d2")).to_wire();
        assert_eq!(delete["importMode"], "deleteIfMatchETag");
        assert!(delete.get("authentication").is_none());
    }
}
