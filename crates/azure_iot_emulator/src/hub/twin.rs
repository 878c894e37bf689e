//! Twin state and the hub's twin semantics.
//!
//! * `tags`, `desired`, `reported` are JSON objects; patches merge recursively and `null`
//!   deletes ([`azure_iot_core::twin::merge_patch`]).
//! * `desired` and `reported` each have a `$version` that grows by one on every change of that
//!   section; the twin's `version` grows on every write; the twin `etag` changes with it.
//! * `$metadata` mirrors each section: every object and leaf written gets `$lastUpdated`, and
//!   in `desired` also `$lastUpdatedVersion` (the desired version that wrote it).
//! * Key rules and depth limits are those of [`azure_iot_core::twin::validate_patch`].
//!
//! Every operation works on a clone and replaces `self` only when the whole result is valid
//! (keys, depth, section sizes), so a refused write leaves the twin exactly as it was; the
//! caller then stores the new state before installing it (ADR 4). Who may write what is
//! fixed here: the service writes `tags` and `desired` and is refused on `reported`; the
//! device writes `reported` only (its desired section is read-only on every transport).

use azure_iot_core::twin::{merge_patch, validate_patch};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::error::HubError;

/// Largest serialised size of one twin section (tags, desired or reported), as the hub allows.
pub(crate) const MAX_SECTION_BYTES: usize = 32 * 1024;

/// A twin's mutable state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TwinState {
    /// Service-only metadata for queries and jobs; no `$metadata`, no `$version`, never sent
    /// to the device.
    pub(crate) tags: Map<String, Value>,
    /// Desired properties, without `$metadata` / `$version` (kept apart, added on render).
    pub(crate) desired: Map<String, Value>,
    /// Reported properties, likewise without the `$` members.
    pub(crate) reported: Map<String, Value>,
    /// `$metadata` of the desired section: `$lastUpdated` and `$lastUpdatedVersion` per node.
    pub(crate) desired_metadata: Map<String, Value>,
    /// `$metadata` of the reported section: `$lastUpdated` per node, no version.
    pub(crate) reported_metadata: Map<String, Value>,
    /// Desired `$version`: 1 at creation, +1 per change of the desired section. Devices use
    /// it to order patches against a full twin GET.
    pub(crate) desired_version: i64,
    /// Reported `$version`: 1 at creation, +1 per device patch; the MQTT twin PATCH answer
    /// carries it.
    pub(crate) reported_version: i64,
    /// Whole-twin `version`: +1 on every write of any section; the twin ETag derives from it.
    pub(crate) version: i64,
    /// Plug and Play model id announced by the device at connect; empty when none.
    pub(crate) model_id: String,
}

impl TwinState {
    /// A fresh twin, as the hub creates one with its identity.
    pub(crate) fn new(now: &str) -> Self {
        let metadata = |with_version: bool| {
            let mut m = Map::new();
            m.insert("$lastUpdated".into(), json!(now));
            if with_version {
                m.insert("$lastUpdatedVersion".into(), json!(1));
            }
            m
        };
        Self {
            tags: Map::new(),
            desired: Map::new(),
            reported: Map::new(),
            desired_metadata: metadata(true),
            reported_metadata: metadata(false),
            desired_version: 1,
            reported_version: 1,
            version: 1,
            model_id: String::new(),
        }
    }

    /// The twin ETag: base64 of the 8-byte big-endian twin version (the hub's shape).
    pub(crate) fn etag(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.version.to_be_bytes())
    }

    /// `{"desired": {... "$metadata", "$version"}, "reported": {...}}`.
    ///
    /// The service sees `$metadata` (`with_metadata`); a device's full twin GET does not.
    /// `$version` is always present: devices compare it with the `$version` of later desired
    /// patches to drop stale ones.
    pub(crate) fn properties_json(&self, with_metadata: bool) -> Value {
        let section = |props: &Map<String, Value>, meta: &Map<String, Value>, version: i64| {
            let mut out = props.clone();
            if with_metadata {
                out.insert("$metadata".into(), Value::Object(meta.clone()));
            }
            out.insert("$version".into(), json!(version));
            Value::Object(out)
        };
        json!({
            "desired": section(&self.desired, &self.desired_metadata, self.desired_version),
            "reported": section(&self.reported, &self.reported_metadata, self.reported_version),
        })
    }

    /// Service PATCH: merges `tags` and `properties.desired`. Returns whether desired changed.
    ///
    /// An empty body (neither section) is a no-op that does not bump versions. A non-empty
    /// desired patch bumps the desired `$version` once, whatever it contains, even if every
    /// value is unchanged: the hub versions writes, not differences.
    pub(crate) fn patch_from_service(&mut self, body: &Value, now: &str) -> Result<bool, HubError> {
        let (tags, desired) = service_sections(body)?;
        if tags.is_none() && desired.is_none() {
            return Ok(false);
        }
        let mut next = self.clone();
        if let Some(tags) = tags {
            merge_patch(&mut next.tags, tags);
        }
        let desired_changed = desired.is_some_and(|d| !d.is_empty());
        if let Some(desired) = desired.filter(|d| !d.is_empty()) {
            next.desired_version += 1;
            merge_patch(&mut next.desired, desired);
            let version = next.desired_version;
            update_metadata(&mut next.desired_metadata, desired, now, Some(version));
        }
        next.version += 1;
        next.check_sizes()?;
        *self = next;
        Ok(desired_changed)
    }

    /// Service PUT: replaces `tags` and `properties.desired` wholesale (reported untouched).
    ///
    /// A section missing from the body becomes empty. The desired `$version` grows even if the
    /// new document equals the old one, and desired `$metadata` is rebuilt from scratch, so
    /// every remaining node carries the new `$lastUpdatedVersion`. `null` members are dropped:
    /// in a stored document they would be indistinguishable from a deletion marker.
    pub(crate) fn replace_from_service(&mut self, body: &Value, now: &str) -> Result<(), HubError> {
        let (tags, desired) = service_sections(body)?;
        let mut next = self.clone();
        next.tags = strip_nulls(tags.cloned().unwrap_or_default());
        next.desired = strip_nulls(desired.cloned().unwrap_or_default());
        next.desired_version += 1;
        next.desired_metadata = Map::new();
        let version = next.desired_version;
        let all = next.desired.clone();
        update_metadata(&mut next.desired_metadata, &all, now, Some(version));
        next.version += 1;
        next.check_sizes()?;
        *self = next;
        Ok(())
    }

    /// Device PATCH of reported properties. Returns the new reported version.
    ///
    /// The patch must be a JSON object passing the hub's key and depth rules; top-level `$`
    /// members (a device echoing `$version`) are ignored rather than stored. `null` deletes
    /// the property and its metadata.
    pub(crate) fn patch_reported(&mut self, patch: &Value, now: &str) -> Result<i64, HubError> {
        validate_patch(patch).map_err(|e| HubError::invalid(e.to_string()))?;
        let Value::Object(map) = patch else {
            return Err(HubError::invalid(
                "a reported-properties patch must be a JSON object",
            ));
        };
        let mut next = self.clone();
        let map: Map<String, Value> = map
            .iter()
            .filter(|(k, _)| !k.starts_with('$'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        merge_patch(&mut next.reported, &map);
        next.reported_version += 1;
        update_metadata(&mut next.reported_metadata, &map, now, None);
        next.version += 1;
        next.check_sizes()?;
        *self = next;
        Ok(self.reported_version)
    }

    /// Refuses a state in which any section serialises to more than [`MAX_SECTION_BYTES`]
    /// (400 with the size found), measured after the merge, as the hub limits the resulting
    /// document rather than the patch.
    fn check_sizes(&self) -> Result<(), HubError> {
        for (name, section) in [
            ("tags", &self.tags),
            ("desired properties", &self.desired),
            ("reported properties", &self.reported),
        ] {
            let size = serde_json::to_vec(section).map(|v| v.len()).unwrap_or(0);
            if size > MAX_SECTION_BYTES {
                return Err(HubError::invalid(format!(
                    "{name} would be {size} bytes; IoT Hub allows {MAX_SECTION_BYTES}"
                )));
            }
        }
        Ok(())
    }
}

/// One optional section (`tags` or `properties.desired`) of a service twin body.
type Section<'a> = Option<&'a Map<String, Value>>;

/// The `tags` and `properties.desired` objects of a service twin body, validated.
/// `properties.reported` is refused: only the device writes reported properties.
fn service_sections(body: &Value) -> Result<(Section<'_>, Section<'_>), HubError> {
    let Value::Object(body) = body else {
        return Err(HubError::invalid("a twin body must be a JSON object"));
    };
    let tags = match body.get("tags") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(map)) => {
            validate_patch(v).map_err(|e| HubError::invalid(format!("tags: {e}")))?;
            Some(map)
        }
        Some(_) => return Err(HubError::invalid("`tags` must be a JSON object")),
    };
    let desired = match body.get("properties") {
        None | Some(Value::Null) => None,
        Some(Value::Object(props)) => {
            if props.get("reported").is_some_and(|r| !r.is_null()) {
                return Err(HubError::invalid(
                    "reported properties can only be written by the device",
                ));
            }
            match props.get("desired") {
                None | Some(Value::Null) => None,
                Some(v @ Value::Object(map)) => {
                    validate_patch(v)
                        .map_err(|e| HubError::invalid(format!("properties.desired: {e}")))?;
                    Some(map)
                }
                Some(_) => {
                    return Err(HubError::invalid(
                        "`properties.desired` must be a JSON object",
                    ));
                }
            }
        }
        Some(_) => return Err(HubError::invalid("`properties` must be a JSON object")),
    };
    Ok((tags, desired))
}

/// Records `$lastUpdated` (and `$lastUpdatedVersion`) for every node `patch` writes; removes
/// metadata of deleted members.
fn update_metadata(
    meta: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    now: &str,
    version: Option<i64>,
) {
    stamp(meta, now, version);
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                meta.remove(key);
            }
            Value::Object(inner) => {
                let slot = meta
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(child) = slot {
                    update_metadata(child, inner, now, version);
                }
            }
            _ => {
                let mut leaf = Map::new();
                stamp(&mut leaf, now, version);
                meta.insert(key.clone(), Value::Object(leaf));
            }
        }
    }
}

/// Sets `$lastUpdated` (and, for desired metadata, `$lastUpdatedVersion`) on one node.
fn stamp(meta: &mut Map<String, Value>, now: &str, version: Option<i64>) {
    meta.insert("$lastUpdated".into(), json!(now));
    if let Some(version) = version {
        meta.insert("$lastUpdatedVersion".into(), json!(version));
    }
}

/// A replacement document must not keep `null` members (they mean "delete" in a patch).
fn strip_nulls(mut map: Map<String, Value>) -> Map<String, Value> {
    map.retain(|_, v| !v.is_null());
    for value in map.values_mut() {
        if let Value::Object(inner) = value {
            *inner = strip_nulls(std::mem::take(inner));
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2026-01-01T00:00:00.0000000Z";
    const T2: &str = "2026-01-02T00:00:00.0000000Z";

    #[test]
    fn service_patch_merges_versions_and_metadata() {
        let mut twin = TwinState::new(T1);
        let changed = twin
            .patch_from_service(
                &json!({"tags": {"floor": 3}, "properties": {"desired": {"temp": 21, "fan": {"on": true}}}}),
                T2,
            )
            .unwrap();
        assert!(changed);
        assert_eq!(twin.desired_version, 2);
        assert_eq!(twin.version, 2);
        assert_eq!(twin.etag(), "AAAAAAAAAAI=");
        assert_eq!(
            twin.desired_metadata["temp"],
            json!({"$lastUpdated": T2, "$lastUpdatedVersion": 2})
        );
        assert_eq!(
            twin.desired_metadata["fan"]["on"]["$lastUpdatedVersion"],
            json!(2)
        );
        twin.patch_from_service(&json!({"properties": {"desired": {"temp": null}}}), T2)
            .unwrap();
        assert!(!twin.desired.contains_key("temp"));
        assert!(!twin.desired_metadata.contains_key("temp"));
        // Tags only: desired version unchanged.
        let changed = twin
            .patch_from_service(&json!({"tags": {"x": 1}}), T2)
            .unwrap();
        assert!(!changed);
        assert_eq!(twin.desired_version, 3);
        let props = twin.properties_json(true);
        assert_eq!(props["desired"]["$version"], json!(3));
        assert_eq!(props["reported"]["$version"], json!(1));
    }

    #[test]
    fn replace_keeps_reported_and_drops_old_desired() {
        let mut twin = TwinState::new(T1);
        twin.patch_reported(&json!({"r": 1}), T1).unwrap();
        twin.patch_from_service(&json!({"properties": {"desired": {"a": 1}}}), T1)
            .unwrap();
        twin.replace_from_service(&json!({"properties": {"desired": {"b": 2}}}), T2)
            .unwrap();
        assert_eq!(Value::Object(twin.desired.clone()), json!({"b": 2}));
        assert_eq!(Value::Object(twin.reported.clone()), json!({"r": 1}));
        assert!(twin.tags.is_empty());
    }

    #[test]
    fn reported_patch_from_a_device() {
        let mut twin = TwinState::new(T1);
        assert_eq!(
            twin.patch_reported(&json!({"temperature": 21.5, "nested": {"a": null}}), T2)
                .unwrap(),
            2
        );
        assert_eq!(
            twin.reported_metadata["temperature"]["$lastUpdated"],
            json!(T2)
        );
        assert!(
            twin.reported_metadata["temperature"]
                .get("$lastUpdatedVersion")
                .is_none()
        );
        assert!(twin.patch_reported(&json!({"bad key": 1}), T2).is_err());
        assert!(twin.patch_reported(&json!([1]), T2).is_err());
        assert_eq!(twin.reported_version, 2, "failed patches change nothing");
    }

    #[test]
    fn bad_service_bodies_change_nothing() {
        let mut twin = TwinState::new(T1);
        let before = twin.clone();
        for body in [
            json!([1]),
            json!({"tags": 5}),
            json!({"properties": {"reported": {"x": 1}}}),
            json!({"properties": {"desired": {"$bad": 1}}}),
            json!({"properties": {"desired": {"big": "x".repeat(MAX_SECTION_BYTES)}}}),
        ] {
            assert!(twin.patch_from_service(&body, T2).is_err(), "{body}");
            assert!(twin.replace_from_service(&body, T2).is_err(), "{body}");
        }
        assert_eq!(twin, before);
    }
}
