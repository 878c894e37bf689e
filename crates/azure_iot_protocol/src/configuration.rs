//! Configurations (IoT Hub automatic device management): the JSON models of the service REST
//! API and the hub's rules on them, shared by the service client (which checks input before
//! sending it) and the emulator (which enforces the same rules and answers with the same
//! shapes).
//!
//! A [`Configuration`] targets the twins that match its `targetCondition` and writes its
//! [`ConfigurationContent`] into their desired properties: `deviceContent` into device twins,
//! `moduleContent` into module twins. `modulesContent` is an IoT Edge deployment (one desired
//! document per module, `$edgeAgent` and `$edgeHub` included), also what
//! `POST /devices/{id}/applyConfigurationContent` takes.
//!
//! Wire facts: `PUT/GET/DELETE /configurations/{id}`, `GET /configurations?top=N`,
//! `POST /configurations/testQueries` with [`ConfigurationQueriesTestInput`] answering
//! [`ConfigurationQueriesTestResponse`]. Members the SDKs send as `null` (Node leaves `labels`,
//! `metrics` unset or null) read as empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The longest configuration id the hub accepts.
pub const MAX_CONFIGURATION_ID_LEN: usize = 128;

/// The most configurations one hub holds (the quota of a paid hub).
pub const MAX_CONFIGURATIONS: usize = 100;

/// The most custom metric queries one configuration may define.
pub const MAX_CUSTOM_METRICS: usize = 5;

/// The prefix every `deviceContent` and `moduleContent` key starts with: configurations write
/// desired properties only.
pub const DESIRED_PREFIX: &str = "properties.desired.";

/// The key of a module's desired document inside `modulesContent`.
pub const MODULE_DESIRED_KEY: &str = "properties.desired";

/// Reads `null` as the type's default (the SDKs send `null` for unset members).
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A configuration (`Configuration` in the service API).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Configuration {
    /// The configuration id: up to 128 lowercase letters, digits and `-+%_*!'`.
    pub id: String,
    /// The schema version; `"1.0"`.
    #[serde(default, deserialize_with = "nullable")]
    pub schema_version: String,
    /// Free-form labels describing the configuration.
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// What the configuration writes.
    #[serde(default, deserialize_with = "nullable")]
    pub content: ConfigurationContent,
    /// The content type the hub reports (`assignment`); not interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Which twins the configuration targets: a query condition on twins (`tags.env='prod'`),
    /// `*` for every twin, empty for none.
    #[serde(default, deserialize_with = "nullable")]
    pub target_condition: String,
    /// When the hub created the configuration (set by the hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time_utc: Option<String>,
    /// When the hub last updated the configuration (set by the hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_time_utc: Option<String>,
    /// Among configurations targeting the same twin and path, the highest priority wins; on a
    /// tie, the one created last.
    #[serde(default, deserialize_with = "nullable")]
    pub priority: i32,
    /// `targetedCount` and `appliedCount`, computed by the hub.
    #[serde(default, deserialize_with = "nullable")]
    pub system_metrics: ConfigurationMetrics,
    /// Custom metrics: named queries on twins, whose results are row counts.
    #[serde(default, deserialize_with = "nullable")]
    pub metrics: ConfigurationMetrics,
    /// The ETag for optimistic concurrency (set by the hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// What a configuration writes (`ConfigurationContent`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationContent {
    /// Device twin settings: `properties.desired.<path>` → value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_content: Option<Map<String, Value>>,
    /// An IoT Edge deployment: module id → `{"properties.desired": {...}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules_content: Option<Map<String, Value>>,
    /// Module twin settings: `properties.desired.<path>` → value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_content: Option<Map<String, Value>>,
}

/// Named metrics: their queries and, as the hub reports them, their results.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConfigurationMetrics {
    /// Metric name → count.
    #[serde(default, deserialize_with = "nullable")]
    pub results: BTreeMap<String, i64>,
    /// Metric name → query text.
    #[serde(default, deserialize_with = "nullable")]
    pub queries: BTreeMap<String, String>,
}

/// The body of `POST /configurations/testQueries`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationQueriesTestInput {
    /// A target condition to check.
    #[serde(default, deserialize_with = "nullable")]
    pub target_condition: String,
    /// Custom metric queries to check, by name.
    #[serde(default, deserialize_with = "nullable")]
    pub custom_metric_queries: BTreeMap<String, String>,
}

/// The answer of `POST /configurations/testQueries`: empty strings for valid input.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationQueriesTestResponse {
    /// Why the target condition does not parse; empty if it does.
    #[serde(default, deserialize_with = "nullable")]
    pub target_condition_error: String,
    /// Why each custom metric query does not parse, by name; only failing ones are listed.
    #[serde(default, deserialize_with = "nullable")]
    pub custom_metric_query_errors: BTreeMap<String, String>,
}

/// Which twins a configuration's content is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigurationKind {
    /// `deviceContent`: device twins.
    Device,
    /// `moduleContent`: module twins.
    Module,
    /// `modulesContent`: an IoT Edge deployment.
    EdgeDeployment,
}

/// Why a configuration (or configuration content) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigurationError {
    /// The id is empty, too long, or has a character outside the allowed set.
    #[error(
        "configuration id `{0}` is invalid: use 1 to 128 lowercase letters, digits and - + % _ * ! '"
    )]
    InvalidId(String),
    /// The content sets none or more than one of deviceContent, moduleContent, modulesContent.
    #[error(
        "configuration content must set exactly one of deviceContent, moduleContent and modulesContent"
    )]
    ContentKind,
    /// A `deviceContent`/`moduleContent` key is not `properties.desired.<path>`.
    #[error("content key `{0}` must be `properties.desired.` followed by a property path")]
    ContentPath(String),
    /// A `modulesContent` entry is not `{"properties.desired": {...}}`.
    #[error("modulesContent of `{0}` must be an object with a `properties.desired` object")]
    ModuleDocument(String),
    /// More custom metrics than the hub allows.
    #[error("a configuration has at most {MAX_CUSTOM_METRICS} custom metrics, not {0}")]
    TooManyMetrics(usize),
}

/// Checks a configuration id against the hub's rules.
pub fn validate_id(id: &str) -> Result<(), ConfigurationError> {
    let allowed = |c: char| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, '-' | '+' | '%' | '_' | '*' | '!' | '\'')
    };
    if id.is_empty() || id.len() > MAX_CONFIGURATION_ID_LEN || !id.chars().all(allowed) {
        return Err(ConfigurationError::InvalidId(id.to_owned()));
    }
    Ok(())
}

/// Splits a content key `properties.desired.a.b` into the desired-property path `[a, b]`.
pub fn desired_path(key: &str) -> Result<Vec<&str>, ConfigurationError> {
    let rest = key
        .strip_prefix(DESIRED_PREFIX)
        .ok_or_else(|| ConfigurationError::ContentPath(key.to_owned()))?;
    let segments: Vec<&str> = rest.split('.').collect();
    if segments.iter().any(|s| s.is_empty() || s.starts_with('$')) {
        return Err(ConfigurationError::ContentPath(key.to_owned()));
    }
    Ok(segments)
}

impl ConfigurationContent {
    /// Which kind of content this is; refuses content that sets none or several kinds (an
    /// empty map counts as unset) and keys outside `properties.desired.`.
    pub fn kind(&self) -> Result<ConfigurationKind, ConfigurationError> {
        let set = |m: &Option<Map<String, Value>>| m.as_ref().is_some_and(|m| !m.is_empty());
        let kind = match (
            set(&self.device_content),
            set(&self.module_content),
            set(&self.modules_content),
        ) {
            (true, false, false) => ConfigurationKind::Device,
            (false, true, false) => ConfigurationKind::Module,
            (false, false, true) => ConfigurationKind::EdgeDeployment,
            _ => return Err(ConfigurationError::ContentKind),
        };
        for key in self
            .device_content
            .iter()
            .chain(self.module_content.iter())
            .flat_map(|m| m.keys())
        {
            desired_path(key)?;
        }
        self.check_modules()?;
        Ok(kind)
    }

    /// Checks every `modulesContent` entry is `{"properties.desired": {...}}` (other members
    /// are refused, as the hub writes desired properties only).
    pub fn check_modules(&self) -> Result<(), ConfigurationError> {
        for (module, document) in self.modules_content.iter().flatten() {
            let ok = document.as_object().is_some_and(|d| {
                d.len() == 1 && d.get(MODULE_DESIRED_KEY).is_some_and(Value::is_object)
            });
            if !ok {
                return Err(ConfigurationError::ModuleDocument(module.clone()));
            }
        }
        Ok(())
    }
}

impl Configuration {
    /// A device configuration with `id`, `"1.0"` schema, the given target condition and
    /// priority, and no content yet.
    pub fn new(id: impl Into<String>, target_condition: impl Into<String>, priority: i32) -> Self {
        Self {
            id: id.into(),
            schema_version: "1.0".into(),
            target_condition: target_condition.into(),
            priority,
            ..Self::default()
        }
    }

    /// Checks what the hub checks before storing: the id, the content and the number of
    /// custom metrics. Query syntax is checked by the hub (it owns the query language).
    pub fn validate(&self) -> Result<ConfigurationKind, ConfigurationError> {
        validate_id(&self.id)?;
        let kind = self.content.kind()?;
        if self.metrics.queries.len() > MAX_CUSTOM_METRICS {
            return Err(ConfigurationError::TooManyMetrics(
                self.metrics.queries.len(),
            ));
        }
        Ok(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_follow_the_hub_rules() {
        for ok in ["a", "cfg-1", "x+y%z_*!'", &"a".repeat(128)] {
            assert_eq!(validate_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Upper", "a b", "a/b", "a.b", &"a".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_keys_must_be_desired_paths() {
        assert_eq!(desired_path("properties.desired.a.b"), Ok(vec!["a", "b"]));
        for bad in [
            "properties.reported.a",
            "properties.desired.",
            "properties.desired",
            "properties.desired.a..b",
            "properties.desired.$version",
            "tags.a",
        ] {
            assert!(desired_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_sets_exactly_one_kind() {
        let content = |v: Value| serde_json::from_value::<ConfigurationContent>(v).unwrap();
        assert_eq!(
            content(json!({"deviceContent": {"properties.desired.x": 1}})).kind(),
            Ok(ConfigurationKind::Device)
        );
        assert_eq!(
            content(json!({"moduleContent": {"properties.desired.x": 1}, "deviceContent": {}}))
                .kind(),
            Ok(ConfigurationKind::Module)
        );
        assert_eq!(
            content(json!({"modulesContent": {"$edgeAgent": {"properties.desired": {}}}})).kind(),
            Ok(ConfigurationKind::EdgeDeployment)
        );
        assert_eq!(
            content(json!({})).kind(),
            Err(ConfigurationError::ContentKind)
        );
        assert_eq!(
            content(json!({"deviceContent": {"properties.desired.x": 1}, "moduleContent": {"properties.desired.x": 1}})).kind(),
            Err(ConfigurationError::ContentKind)
        );
        assert_eq!(
            content(json!({"deviceContent": {"tags.x": 1}})).kind(),
            Err(ConfigurationError::ContentPath("tags.x".into()))
        );
        assert_eq!(
            content(json!({"modulesContent": {"m": {"properties.desired": 1}}})).kind(),
            Err(ConfigurationError::ModuleDocument("m".into()))
        );
    }

    #[test]
    fn nulls_read_as_empty_and_the_shape_round_trips() {
        let config: Configuration = serde_json::from_value(json!({
            "id": "c1", "schemaVersion": null, "labels": null, "metrics": null,
            "content": {"deviceContent": {"properties.desired.x": 1}},
            "targetCondition": "tags.a='b'", "priority": 3, "etag": "MQ=="
        }))
        .unwrap();
        assert!(config.labels.is_empty() && config.metrics.queries.is_empty());
        let again: Configuration =
            serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
        assert_eq!(again, config);
        let text = serde_json::to_value(&config).unwrap();
        assert_eq!(text["targetCondition"], "tags.a='b'");
        assert_eq!(text["content"]["deviceContent"]["properties.desired.x"], 1);
        assert!(text["content"].get("moduleContent").is_none());
    }

    #[test]
    fn too_many_metrics_are_refused() {
        let mut config = Configuration::new("c", "*", 0);
        config.content.device_content =
            Some(Map::from_iter([("properties.desired.x".into(), json!(1))]));
        assert_eq!(config.validate(), Ok(ConfigurationKind::Device));
        for i in 0..6 {
            config
                .metrics
                .queries
                .insert(format!("m{i}"), "SELECT deviceId FROM devices".into());
        }
        assert_eq!(
            config.validate(),
            Err(ConfigurationError::TooManyMetrics(6))
        );
    }
}
