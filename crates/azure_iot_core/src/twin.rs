//! Device and module twins.
//!
//! A twin is a JSON document the hub keeps per identity: `tags` (service-only), and
//! `properties.desired` (written by the service, pushed to the device) and
//! `properties.reported` (written by the device). Each of the two property sections carries
//! `$version`, incremented on every change of that section, and `$metadata` with
//! `$lastUpdated` times; [`TwinCollection`] keeps those apart from the user's properties.
//!
//! Patches are JSON merge patches: members are merged recursively and a `null` member deletes
//! the key ([`merge_patch`]). [`validate_patch`] applies IoT Hub's key and depth rules, so a
//! client can refuse a bad patch before sending it and the emulator refuses it the way the hub
//! does.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The deepest nesting IoT Hub accepts in twin properties and tags.
pub const MAX_TWIN_DEPTH: usize = 10;

/// A twin as the service API returns it (`GET /twins/{id}`).
///
/// Fields this crate does not model are kept in `other` and written back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Twin {
    /// The device id.
    pub device_id: String,
    /// The module id, for a module twin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// The twin's ETag, for conditional updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The device identity's ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_etag: Option<String>,
    /// Version of the whole twin, incremented on every write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// `enabled` or `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why the identity has its status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// When the status last changed (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_update_time: Option<String>,
    /// `Connected` or `Disconnected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state: Option<String>,
    /// When the identity last connected or sent a message (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<String>,
    /// Cloud-to-device messages waiting for the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_to_device_message_count: Option<i64>,
    /// `sas`, `selfSigned`, `certificateAuthority` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_type: Option<String>,
    /// X.509 thumbprints, as the service returns them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509_thumbprint: Option<Value>,
    /// Device capabilities (e.g. `{"iotEdge": false}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Value>,
    /// Plug and Play model id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Service-only tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Map<String, Value>>,
    /// Desired and reported properties.
    #[serde(default)]
    pub properties: TwinProperties,
    /// Members this crate does not model.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The `properties` of a twin; also the body of a device's twin GET over MQTT.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TwinProperties {
    /// Written by the service, read by the device.
    #[serde(default)]
    pub desired: TwinCollection,
    /// Written by the device, read by the service.
    #[serde(default)]
    pub reported: TwinCollection,
}

impl TwinProperties {
    /// Both sections.
    pub fn new(desired: TwinCollection, reported: TwinCollection) -> Self {
        Self { desired, reported }
    }
}

/// One property section (`desired` or `reported`), or a patch to one.
///
/// `$version` and `$metadata` are lifted out of the user's properties; serialising puts them
/// back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TwinCollection {
    /// `$version` of the section (or, in a desired-property patch, the version it produced).
    #[serde(rename = "$version", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// `$metadata`: `$lastUpdated` (and `$lastUpdatedVersion` for desired) per node.
    #[serde(rename = "$metadata", default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// The user's properties.
    #[serde(flatten)]
    pub properties: Map<String, Value>,
}

impl TwinCollection {
    /// A collection holding `properties` (a JSON object; anything else gives an empty one).
    pub fn from_properties(properties: Value) -> Self {
        Self {
            properties: match properties {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            ..Self::default()
        }
    }

    /// One property.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.properties.get(key)
    }
}

/// Why a twin patch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TwinError {
    /// The patch is not a JSON object.
    #[error("a twin patch must be a JSON object")]
    NotAnObject,
    /// A key is empty, starts with `$`, or contains `.`, a space or a control character.
    #[error(
        "twin property name `{0}` is not allowed (no leading `$`, no `.`, space or control characters)"
    )]
    InvalidKey(String),
    /// The patch nests deeper than [`MAX_TWIN_DEPTH`].
    #[error("twin properties nest deeper than {MAX_TWIN_DEPTH} levels")]
    TooDeep,
}

/// Checks a patch against IoT Hub's rules for property names and nesting depth.
///
/// `$version` and `$metadata` at the top level are allowed (a desired patch from the hub
/// carries `$version`); everywhere else a key starting with `$` is refused.
pub fn validate_patch(patch: &Value) -> Result<(), TwinError> {
    let Value::Object(map) = patch else {
        return Err(TwinError::NotAnObject);
    };
    for (key, value) in map {
        if key == "$version" || key == "$metadata" {
            continue;
        }
        validate_member(key, value, 1)?;
    }
    Ok(())
}

fn validate_member(key: &str, value: &Value, depth: usize) -> Result<(), TwinError> {
    if key.is_empty()
        || key.starts_with('$')
        || key.chars().any(|c| c == '.' || c == ' ' || c.is_control())
    {
        return Err(TwinError::InvalidKey(key.to_owned()));
    }
    if let Value::Object(map) = value {
        if depth >= MAX_TWIN_DEPTH {
            return Err(TwinError::TooDeep);
        }
        for (k, v) in map {
            validate_member(k, v, depth + 1)?;
        }
    }
    Ok(())
}

/// Applies a JSON merge patch to `target`: objects merge recursively, `null` deletes, any
/// other value replaces.
///
/// ```
/// use serde_json::json;
/// let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}}).as_object().unwrap().clone();
/// azure_iot_core::twin::merge_patch(&mut doc, json!({"a": null, "b": {"c": 5}}).as_object().unwrap());
/// assert_eq!(serde_json::Value::Object(doc), json!({"b": {"c": 5, "d": 3}}));
/// ```
pub fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(existing) = slot {
                    merge_patch(existing, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn twin_round_trips_with_version_metadata_and_unknown_members() {
        let text = json!({
            "deviceId": "d1",
            "etag": "AAAAAAAAAAE=",
            "version": 4,
            "status": "enabled",
            "connectionState": "Disconnected",
            "modelId": "dtmi:com:example:Thermostat;1",
            "tags": {"floor": 3},
            "properties": {
                "desired": {"temp": 21, "$version": 2,
                            "$metadata": {"$lastUpdated": "2024-01-01T00:00:00.0000000Z", "$lastUpdatedVersion": 2}},
                "reported": {"temp": 20.5, "$version": 7}
            },
            "futureField": [1, 2]
        });
        let twin: Twin = serde_json::from_value(text.clone()).unwrap();
        assert_eq!(twin.properties.desired.version, Some(2));
        assert_eq!(twin.properties.desired.get("temp"), Some(&json!(21)));
        assert!(twin.properties.desired.metadata.is_some());
        assert!(!twin.properties.desired.properties.contains_key("$version"));
        assert_eq!(twin.properties.reported.version, Some(7));
        assert_eq!(twin.other.get("futureField"), Some(&json!([1, 2])));
        assert_eq!(serde_json::to_value(&twin).unwrap(), text);
    }

    #[test]
    fn mqtt_twin_get_body_parses() {
        let body = r#"{"desired":{"$version":1},"reported":{"$version":1}}"#;
        let props: TwinProperties = serde_json::from_str(body).unwrap();
        assert_eq!(props.desired.version, Some(1));
        assert!(props.desired.properties.is_empty());
    }

    #[test]
    fn desired_patch_keeps_its_version() {
        let patch: TwinCollection =
            serde_json::from_str(r#"{"fanOn":true,"nested":{"a":null},"$version":12}"#).unwrap();
        assert_eq!(patch.version, Some(12));
        assert_eq!(patch.get("nested"), Some(&json!({"a": null})));
    }

    #[test]
    fn merge_patch_merges_deletes_and_replaces() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "x": 5, "s": "str"})
            .as_object()
            .unwrap()
            .clone();
        let patch = json!({"a": {"b": null, "d": {"e": 1}}, "x": [1], "s": {"now": "object"}, "gone": null});
        merge_patch(&mut doc, patch.as_object().unwrap());
        assert_eq!(
            Value::Object(doc),
            json!({"a": {"c": 2, "d": {"e": 1}}, "x": [1], "s": {"now": "object"}})
        );
    }

    #[test]
    fn patch_validation_follows_hub_rules() {
        assert_eq!(
            validate_patch(&json!({"temperature": 21.5, "nested": {"a": null}})),
            Ok(())
        );
        assert_eq!(validate_patch(&json!({"$version": 3, "a": 1})), Ok(()));
        assert_eq!(validate_patch(&json!([1])), Err(TwinError::NotAnObject));
        for bad in ["$x", "a.b", "a b", "", "tab\t"] {
            assert_eq!(
                validate_patch(&json!({ bad: 1 })),
                Err(TwinError::InvalidKey(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            validate_patch(&json!({"a": {"$nested": 1}})),
            Err(TwinError::InvalidKey("$nested".into()))
        );
        let mut deep = json!(1);
        for _ in 0..MAX_TWIN_DEPTH {
            deep = json!({ "k": deep });
        }
        assert_eq!(validate_patch(&deep), Ok(()));
        assert_eq!(
            validate_patch(&json!({ "k": deep })),
            Err(TwinError::TooDeep)
        );
    }
}
