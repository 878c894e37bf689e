//! Configurations (automatic device management): stored, applied to twins, measured.
//!
//! A configuration targets the twins its `targetCondition` matches (the query engine's
//! [`Condition`] over the twin documents the query API serves; `*` is every twin, an empty
//! condition none) and writes its content into their desired properties: `deviceContent` into
//! device twins, `moduleContent` into module twins (whose condition may be written
//! `FROM devices.modules WHERE …`). IoT Edge deployments (`modulesContent`) are refused with
//! 501: the emulator applies edge content only through `applyConfigurationContent`.
//!
//! # How the hub's rules are applied
//!
//! * **Per path, highest priority wins**: for each twin, the matching configurations are taken
//!   by priority (highest first) and, on a tie, by creation (latest first); each content path
//!   (`properties.desired.a.b`) goes to the first configuration that has it, and a path that
//!   overlaps one already taken (`a` and `a.b`) is skipped. A configuration that won at least
//!   one path is `Applied` to the twin, one that won none `Targeted`; the twin document shows
//!   this as `configurations.{id}.status`, which the system metric queries read.
//! * **When**: synchronously on the state thread, after every change that can alter the result
//!   (a configuration created, updated or deleted: every twin; a twin's tags, desired or
//!   reported properties written, or an identity created: that twin), instead of the hub's
//!   periodic pass. Each twin write is then followed by the configuration writes it causes,
//!   before the next operation runs, so tests never wait for a cadence.
//! * **Writes**: a twin is written only when the owner of a path changes (a new winner: its
//!   value; no winner any more: `null`, removing the setting, as the hub does when a twin
//!   leaves a configuration's target). Values drifting from the content (a service patch over
//!   a managed path) are not re-applied until the owner changes. Writes are ordinary service
//!   desired patches (stored first, then pushed to connected devices).
//! * **Restart**: who owns which path is derived again at load from the stored
//!   configurations and twins, without writing (the stored twins already hold the result).
//! * **Metrics** are computed on read: `targetedCount` (twins matching the condition),
//!   `appliedCount` (twins where the configuration is `Applied`), and each custom metric query
//!   as the number of rows it returns.
//!
//! Updates follow the hub: content is immutable (400 if an update changes it); target
//! condition, priority, labels and metrics may change, and the ETag changes with them.

use std::collections::{BTreeMap, HashMap};

use azure_iot_protocol::configuration::{
    Configuration, ConfigurationContent, ConfigurationKind, ConfigurationQueriesTestInput,
    ConfigurationQueriesTestResponse, MAX_CONFIGURATIONS, MODULE_DESIRED_KEY, desired_path,
};
use azure_iot_query::{Collection, Condition, Query};
use serde_json::{Map, Value, json};

use super::HubState;
use super::error::{ErrorCode, HubError};
use super::identity::IdentityBody;
use super::state::{check_if_match, now};
use crate::error::EmulatorError;
use crate::store::{Change, Store};

/// A twin: device id and, for a module twin, module id.
type TwinKey = (String, Option<String>);

/// The prefix a module configuration's target condition may carry.
const MODULES_FROM: &str = "from devices.modules where";

/// What a configuration is applied to.
#[derive(Debug, Clone)]
enum Target {
    /// `*`: every twin of the kind.
    All,
    /// An empty condition: no twin.
    Nothing,
    /// A parsed condition.
    Where(Condition),
}

impl Target {
    /// Parses a target condition for configurations of `kind`.
    fn parse(text: &str, kind: ConfigurationKind) -> Result<Self, String> {
        let mut text = text.trim();
        if kind == ConfigurationKind::Module
            && text.len() >= MODULES_FROM.len()
            && text
                .get(..MODULES_FROM.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(MODULES_FROM))
        {
            text = text[MODULES_FROM.len()..].trim();
        }
        match text {
            "" => Ok(Self::Nothing),
            "*" => Ok(Self::All),
            _ => Condition::parse(text)
                .map(Self::Where)
                .map_err(|e| e.to_string()),
        }
    }

    fn matches(&self, twin: &Value) -> bool {
        match self {
            Self::All => true,
            Self::Nothing => false,
            Self::Where(condition) => condition.matches(twin),
        }
    }
}

/// One content setting: the key as written, its desired-property path, its value.
#[derive(Debug, Clone)]
struct Setting {
    key: String,
    path: Vec<String>,
    value: Value,
}

/// A stored configuration with what applying it needs, parsed once.
#[derive(Debug, Clone)]
struct Entry {
    /// The configuration as stored (metric results are not stored: computed on read).
    config: Configuration,
    /// Device or module configuration.
    kind: ConfigurationKind,
    target: Target,
    settings: Vec<Setting>,
    /// Creation order, to break priority ties (latest wins).
    created: u64,
}

impl Entry {
    /// Validates `config` and parses what applying it needs; 400 with the reason otherwise.
    fn new(config: Configuration, created: u64) -> Result<Self, HubError> {
        let kind = config
            .validate()
            .map_err(|e| HubError::invalid(e.to_string()))?;
        if kind == ConfigurationKind::EdgeDeployment {
            return Err(HubError::new(
                ErrorCode::NotImplemented,
                "IoT Edge deployments (modulesContent) are not applied by the emulator; use applyConfigurationContent for a device",
            ));
        }
        let target = Target::parse(&config.target_condition, kind)
            .map_err(|e| HubError::invalid(format!("targetCondition: {e}")))?;
        for (name, query) in &config.metrics.queries {
            Query::parse(query).map_err(|e| HubError::invalid(format!("metric `{name}`: {e}")))?;
        }
        let content = match kind {
            ConfigurationKind::Device => config.content.device_content.as_ref(),
            _ => config.content.module_content.as_ref(),
        };
        let mut settings = Vec::new();
        for (key, value) in content.into_iter().flatten() {
            let path = desired_path(key).map_err(|e| HubError::invalid(e.to_string()))?;
            settings.push(Setting {
                key: key.clone(),
                path: path.into_iter().map(str::to_owned).collect(),
                value: value.clone(),
            });
        }
        Ok(Self {
            config,
            kind,
            target,
            settings,
            created,
        })
    }

    fn for_modules(&self) -> bool {
        self.kind == ConfigurationKind::Module
    }
}

/// What the configurations did to one twin.
#[derive(Debug, Clone, Default, PartialEq)]
struct Assignment {
    /// Content key → the configuration whose value the twin holds.
    owners: BTreeMap<String, String>,
    /// Configuration id → applied (won a path) or only targeted.
    applied: BTreeMap<String, bool>,
}

/// The hub's configurations and what they did to each twin.
#[derive(Default)]
pub(crate) struct Configurations {
    entries: BTreeMap<String, Entry>,
    twins: HashMap<TwinKey, Assignment>,
    /// The next creation number.
    next_created: u64,
}

impl Configurations {
    /// Loads the stored configurations (creation order is the stored creation time, then id).
    pub(crate) fn load(store: &Store) -> Result<Self, EmulatorError> {
        let mut configs = Vec::new();
        for (id, json) in store.configurations()? {
            let config: Configuration = serde_json::from_str(&json).map_err(|e| {
                EmulatorError::Storage(format!("configuration `{id}` is corrupt: {e}"))
            })?;
            configs.push(config);
        }
        configs.sort_by(|a, b| (&a.created_time_utc, &a.id).cmp(&(&b.created_time_utc, &b.id)));
        let mut out = Self::default();
        for config in configs {
            let id = config.id.clone();
            let entry = Entry::new(config, out.next_created).map_err(|e| {
                EmulatorError::Storage(format!("configuration `{id}` is invalid: {}", e.message))
            })?;
            out.next_created += 1;
            out.entries.insert(id, entry);
        }
        Ok(out)
    }

    /// The `configurations` member of a twin document: `{id: {"status": "Applied"|"Targeted"}}`,
    /// `None` when no configuration targets the twin.
    pub(crate) fn twin_member(&self, device_id: &str, module_id: Option<&str>) -> Option<Value> {
        let key = (device_id.to_owned(), module_id.map(str::to_owned));
        let assignment = self.twins.get(&key)?;
        if assignment.applied.is_empty() {
            return None;
        }
        let member: Map<String, Value> = assignment
            .applied
            .iter()
            .map(|(id, applied)| {
                let status = if *applied { "Applied" } else { "Targeted" };
                (id.clone(), json!({ "status": status }))
            })
            .collect();
        Some(Value::Object(member))
    }

    /// Forgets a deleted twin (a device's modules with it).
    pub(crate) fn forget(&mut self, device_id: &str, module_id: Option<&str>) {
        match module_id {
            Some(m) => {
                self.twins
                    .remove(&(device_id.to_owned(), Some(m.to_owned())));
            }
            None => self.twins.retain(|(d, _), _| d != device_id),
        }
    }

    /// What the configurations give one twin (`doc`): the owner and value of each path, and
    /// the status of each matching configuration.
    fn assign(&self, doc: &Value, module: bool) -> (Assignment, BTreeMap<String, Value>) {
        let mut matching: Vec<&Entry> = self
            .entries
            .values()
            .filter(|e| e.for_modules() == module && e.target.matches(doc))
            .collect();
        matching.sort_by(|a, b| {
            b.config
                .priority
                .cmp(&a.config.priority)
                .then(b.created.cmp(&a.created))
        });
        let mut taken: Vec<&[String]> = Vec::new();
        let mut assignment = Assignment::default();
        let mut values = BTreeMap::new();
        for entry in matching {
            let mut won = false;
            for setting in &entry.settings {
                let overlaps = taken.iter().any(|t| {
                    let n = t.len().min(setting.path.len());
                    t[..n] == setting.path[..n]
                });
                if overlaps {
                    continue;
                }
                taken.push(&setting.path);
                won = true;
                assignment
                    .owners
                    .insert(setting.key.clone(), entry.config.id.clone());
                values.insert(setting.key.clone(), setting.value.clone());
            }
            assignment.applied.insert(entry.config.id.clone(), won);
        }
        (assignment, values)
    }
}

/// The desired patch that moves a twin from `old` owners to `new` ones: new or re-owned
/// paths get their value, paths nobody owns any more get `null` (unless a path now owned
/// covers them). `None` when nothing changes.
fn desired_patch(
    old: &Assignment,
    new: &Assignment,
    values: &BTreeMap<String, Value>,
) -> Option<Map<String, Value>> {
    let mut patch = Map::new();
    let mut changed = false;
    let path_of = |key: &str| -> Vec<String> {
        desired_path(key)
            .map(|p| p.into_iter().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    for key in old.owners.keys().filter(|k| !new.owners.contains_key(*k)) {
        let path = path_of(key);
        let covered = new.owners.keys().any(|k| path.starts_with(&path_of(k)));
        if !covered && !path.is_empty() {
            set_path(&mut patch, &path, Value::Null);
            changed = true;
        }
    }
    for (key, owner) in &new.owners {
        if old.owners.get(key) != Some(owner)
            && let Some(value) = values.get(key)
        {
            set_path(&mut patch, &path_of(key), value.clone());
            changed = true;
        }
    }
    changed.then_some(patch)
}

/// Sets `value` at `path` inside `map`, creating objects on the way.
fn set_path(map: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = map;
    for segment in parents {
        let child = node
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !child.is_object() {
            *child = Value::Object(Map::new());
        }
        let Value::Object(next) = child else {
            return;
        };
        node = next;
    }
    node.insert(last.clone(), value);
}

impl HubState {
    // ---- REST operations ---------------------------------------------------------------

    /// `GET /configurations/{id}`: the configuration with its metrics; 404
    /// `ConfigurationNotFound`.
    pub(crate) fn get_configuration(&self, id: &str) -> Result<Value, HubError> {
        let entry = self
            .configurations
            .entries
            .get(id)
            .ok_or_else(|| configuration_not_found(id))?;
        Ok(self.configuration_json(entry))
    }

    /// `GET /configurations?top=n`: up to `top` configurations in id order, with metrics.
    pub(crate) fn list_configurations(&self, top: usize) -> Vec<Value> {
        self.configurations
            .entries
            .values()
            .take(top)
            .map(|e| self.configuration_json(e))
            .collect()
    }

    /// `PUT /configurations/{id}`: create (no `If-Match`; 409 `ConfigurationAlreadyExists` if
    /// the id is taken, 413 `ConfigurationCountLimitExceeded` past the hub's 100) or update
    /// (`If-Match` `*` or the current ETag, else 412; content must not change). Every twin is
    /// then re-evaluated. Answers the stored configuration with its metrics.
    pub(crate) fn put_configuration(
        &mut self,
        id: &str,
        mut config: Configuration,
        if_match: Option<&str>,
    ) -> Result<Value, HubError> {
        if config.id.is_empty() {
            config.id = id.to_owned();
        }
        if config.id != id {
            return Err(HubError::invalid(format!(
                "the body's id `{}` is not the path's `{id}`",
                config.id
            )));
        }
        let existing = self.configurations.entries.get(id);
        let now = now();
        let created = match (existing, if_match) {
            (Some(_), None) => {
                return Err(HubError::new(
                    ErrorCode::ConfigurationAlreadyExists,
                    format!("Configuration {id} already exists"),
                ));
            }
            (Some(entry), Some(tag)) => {
                check_if_match(tag, entry.config.etag.as_deref().unwrap_or_default())?;
                if !same_content(&entry.config.content, &config.content) {
                    return Err(HubError::invalid(
                        "the content of a configuration cannot be changed; only targetCondition, priority, labels and metrics can",
                    ));
                }
                config.created_time_utc = entry.config.created_time_utc.clone();
                entry.created
            }
            (None, tag) => {
                if tag.is_some_and(|t| t.trim().trim_matches('"') != "*") {
                    return Err(configuration_not_found(id));
                }
                if self.configurations.entries.len() >= MAX_CONFIGURATIONS {
                    return Err(HubError::new(
                        ErrorCode::ConfigurationCountLimitExceeded,
                        format!("the hub holds at most {MAX_CONFIGURATIONS} configurations"),
                    ));
                }
                config.created_time_utc = Some(now.clone());
                self.configurations.next_created
            }
        };
        if config.schema_version.is_empty() {
            config.schema_version = "1.0".into();
        }
        config.last_updated_time_utc = Some(now);
        config.etag = Some(self.next_etag());
        config.system_metrics = Default::default();
        config.metrics.results.clear();
        let entry = Entry::new(config, created)?;
        let json = serde_json::to_string(&entry.config).map_err(HubError::storage)?;
        self.store.apply(&[Change::PutConfiguration(id, &json)])?;
        if created == self.configurations.next_created {
            self.configurations.next_created += 1;
        }
        self.configurations.entries.insert(id.to_owned(), entry);
        self.reconcile_all();
        self.get_configuration(id)
    }

    /// `DELETE /configurations/{id}`: 404 `ConfigurationNotFound`; an `If-Match` other than
    /// `*` or the current ETag is 412. The twins it owned paths of are re-evaluated: the next
    /// configuration in line takes over, or the settings are removed.
    pub(crate) fn delete_configuration(
        &mut self,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), HubError> {
        let entry = self
            .configurations
            .entries
            .get(id)
            .ok_or_else(|| configuration_not_found(id))?;
        if let Some(tag) = if_match {
            check_if_match(tag, entry.config.etag.as_deref().unwrap_or_default())?;
        }
        self.store.apply(&[Change::DeleteConfiguration(id)])?;
        self.configurations.entries.remove(id);
        self.reconcile_all();
        Ok(())
    }

    /// `POST /configurations/testQueries`: why the target condition and each custom metric
    /// query do not parse (empty when they do).
    pub(crate) fn test_configuration_queries(
        input: &ConfigurationQueriesTestInput,
    ) -> ConfigurationQueriesTestResponse {
        let target_condition_error =
            match Target::parse(&input.target_condition, ConfigurationKind::Device) {
                Ok(_) => String::new(),
                Err(e) => e,
            };
        let custom_metric_query_errors = input
            .custom_metric_queries
            .iter()
            .filter_map(|(name, query)| {
                Query::parse(query)
                    .err()
                    .map(|e| (name.clone(), e.to_string()))
            })
            .collect();
        ConfigurationQueriesTestResponse {
            target_condition_error,
            custom_metric_query_errors,
        }
    }

    /// `POST /devices/{id}/applyConfigurationContent`: writes an IoT Edge deployment's
    /// content onto one device. Each `modulesContent` entry replaces that module twin's
    /// desired properties (a module the device does not have yet, `$edgeAgent` and `$edgeHub`
    /// included, is created with generated keys, as the edge runtime would); `deviceContent`,
    /// if any, is merged into the device twin. Everything is validated before anything is
    /// written: 404 for an unknown device, 400 for content without `modulesContent` or with a
    /// malformed entry, or one that would exceed the twin size limits.
    pub(crate) fn apply_configuration_content(
        &mut self,
        device_id: &str,
        content: &ConfigurationContent,
    ) -> Result<(), HubError> {
        self.record(device_id, None)?;
        let modules = content
            .modules_content
            .as_ref()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                HubError::invalid("applyConfigurationContent needs a non-empty modulesContent")
            })?;
        content
            .check_modules()
            .map_err(|e| HubError::invalid(e.to_string()))?;
        if content
            .module_content
            .as_ref()
            .is_some_and(|m| !m.is_empty())
        {
            return Err(HubError::invalid(
                "moduleContent does not apply to a device; use modulesContent",
            ));
        }
        let mut device_patch = Map::new();
        for (key, value) in content.device_content.iter().flatten() {
            let path: Vec<String> = desired_path(key)
                .map_err(|e| HubError::invalid(e.to_string()))?
                .into_iter()
                .map(str::to_owned)
                .collect();
            set_path(&mut device_patch, &path, value.clone());
        }
        // Validate every write on copies first, so a refusal changes nothing.
        let stamp = now();
        let mut writes = Vec::new();
        for (module, document) in modules {
            super::identity::validate_id("module", module)?;
            let desired = document
                .get(MODULE_DESIRED_KEY)
                .cloned()
                .unwrap_or_default();
            let mut twin = match self.record(device_id, Some(module)) {
                Ok(record) => record.twin.clone(),
                Err(_) => super::twin::TwinState::new(&stamp),
            };
            let body = json!({"tags": twin.tags, "properties": {"desired": desired}});
            twin.replace_from_service(&body, &stamp)?;
            writes.push((module.clone(), body));
        }
        let device_body = json!({"properties": {"desired": device_patch}});
        if !device_patch.is_empty() {
            self.record(device_id, None)?
                .twin
                .clone()
                .patch_from_service(&device_body, &stamp)?;
        }
        // Create the missing modules in one transaction, then write the twins.
        let mut created = Vec::new();
        for (module, _) in &writes {
            if self.record(device_id, Some(module)).is_err() {
                let spec = IdentityBody::default().validate(device_id, Some(module))?;
                created.push(self.new_record(device_id, Some(module), spec)?);
            }
        }
        let changes: Vec<Change<'_>> = created.iter().map(Change::Put).collect();
        self.store.apply(&changes)?;
        for record in created {
            self.install_identity(record);
        }
        for (module, body) in writes {
            self.write_twin(device_id, Some(&module), &body, None, true)?;
        }
        if !device_patch.is_empty() {
            self.write_twin(device_id, None, &device_body, None, false)?;
        }
        Ok(())
    }

    // ---- applying ---------------------------------------------------------------------

    /// Re-evaluates every twin against every configuration.
    pub(super) fn reconcile_all(&mut self) {
        for (module, docs) in [
            (false, self.twin_documents(false)),
            (true, self.twin_documents(true)),
        ] {
            for doc in docs {
                self.reconcile_doc(&doc, module, true);
            }
        }
    }

    /// Re-evaluates one twin after it changed (tags, properties, a new identity).
    pub(super) fn reconcile_twin(&mut self, device_id: &str, module_id: Option<&str>) {
        if self.configurations.entries.is_empty() {
            return;
        }
        if let Ok(doc) = self.get_twin(device_id, module_id) {
            self.reconcile_doc(&doc, module_id.is_some(), true);
        }
    }

    /// Derives who owns what from the stored state without writing (at load: the stored
    /// twins already hold the result of the last run).
    pub(super) fn adopt_configurations(&mut self) {
        if self.configurations.entries.is_empty() {
            return;
        }
        for (module, docs) in [
            (false, self.twin_documents(false)),
            (true, self.twin_documents(true)),
        ] {
            for doc in docs {
                self.reconcile_doc(&doc, module, false);
            }
        }
    }

    /// Assigns one twin (`doc`) and, when `write`, writes the desired patch that follows. A
    /// write that fails (the twin would exceed its size limit) is logged and leaves the
    /// previous assignment, so the next evaluation tries again.
    fn reconcile_doc(&mut self, doc: &Value, module: bool, write: bool) {
        let device_id = doc["deviceId"].as_str().unwrap_or_default().to_owned();
        let module_id = if module {
            doc["moduleId"].as_str().map(str::to_owned)
        } else {
            None
        };
        let key = (device_id, module_id);
        let (assignment, values) = self.configurations.assign(doc, module);
        let old = self
            .configurations
            .twins
            .get(&key)
            .cloned()
            .unwrap_or_default();
        if old == assignment {
            return;
        }
        if write && let Some(patch) = desired_patch(&old, &assignment, &values) {
            let body = json!({"properties": {"desired": patch}});
            if let Err(e) = self.write_twin(&key.0, key.1.as_deref(), &body, None, false) {
                tracing::warn!(
                    device = %key.0,
                    module = ?key.1,
                    error = %e.message,
                    "could not apply configuration content to the twin"
                );
                return;
            }
        }
        if assignment.applied.is_empty() {
            self.configurations.twins.remove(&key);
        } else {
            self.configurations.twins.insert(key, assignment);
        }
    }

    // ---- rendering --------------------------------------------------------------------

    /// The REST shape: the stored configuration with system and custom metrics computed now.
    fn configuration_json(&self, entry: &Entry) -> Value {
        let mut config = entry.config.clone();
        let id = &config.id;
        let module = entry.for_modules();
        let docs = self.twin_documents(module);
        let targeted = docs.iter().filter(|d| entry.target.matches(d)).count();
        let applied = self
            .configurations
            .twins
            .iter()
            .filter(|((_, m), a)| m.is_some() == module && a.applied.get(id) == Some(&true))
            .count();
        let (select, from) = if module {
            ("deviceId, moduleId", "devices.modules")
        } else {
            ("deviceId", "devices")
        };
        let condition = config.target_condition.trim();
        let condition = if module
            && condition
                .get(..MODULES_FROM.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(MODULES_FROM))
        {
            condition[MODULES_FROM.len()..].trim()
        } else {
            condition
        };
        let targeted_query = match condition {
            "*" => format!("select {select} from {from}"),
            "" => format!("select {select} from {from} where false"),
            c => format!("select {select} from {from} where {c}"),
        };
        config.system_metrics.results = BTreeMap::from([
            ("targetedCount".into(), targeted as i64),
            ("appliedCount".into(), applied as i64),
        ]);
        config.system_metrics.queries = BTreeMap::from([
            ("targetedCount".into(), targeted_query),
            (
                "appliedCount".into(),
                format!(
                    "select {select} from {from} where configurations.[[{id}]].status = 'Applied'"
                ),
            ),
        ]);
        let mut device_docs = None;
        let mut module_docs = None;
        let mut results = BTreeMap::new();
        for (name, text) in &config.metrics.queries {
            let count = match Query::parse(text) {
                Ok(query) => {
                    let docs = match query.collection() {
                        Collection::Devices => {
                            device_docs.get_or_insert_with(|| self.twin_documents(false))
                        }
                        Collection::Modules => {
                            module_docs.get_or_insert_with(|| self.twin_documents(true))
                        }
                        // Job rows are not twins; a metric over them counts nothing.
                        Collection::Jobs => {
                            results.insert(name.clone(), 0);
                            continue;
                        }
                    };
                    query.execute(docs.iter()).len() as i64
                }
                Err(_) => 0,
            };
            results.insert(name.clone(), count);
        }
        config.metrics.results = results;
        serde_json::to_value(&config).unwrap_or(Value::Null)
    }
}

/// Whether two contents are the same (an update must not change content). Empty maps and
/// missing ones are the same.
fn same_content(a: &ConfigurationContent, b: &ConfigurationContent) -> bool {
    let norm = |m: &Option<Map<String, Value>>| m.clone().filter(|m| !m.is_empty());
    norm(&a.device_content) == norm(&b.device_content)
        && norm(&a.module_content) == norm(&b.module_content)
        && norm(&a.modules_content) == norm(&b.modules_content)
}

/// 404 `ConfigurationNotFound`.
fn configuration_not_found(id: &str) -> HubError {
    HubError::new(
        ErrorCode::ConfigurationNotFound,
        format!("Configuration {id} not found"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(owners: &[(&str, &str)]) -> Assignment {
        Assignment {
            owners: owners
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            applied: BTreeMap::new(),
        }
    }

    #[test]
    fn the_patch_sets_new_owners_and_removes_orphans() {
        let values = BTreeMap::from([
            ("properties.desired.a.b".to_owned(), json!(1)),
            ("properties.desired.c".to_owned(), json!("x")),
        ]);
        let old = assignment(&[
            ("properties.desired.a.b", "low"),
            ("properties.desired.d", "low"),
        ]);
        let new = assignment(&[
            ("properties.desired.a.b", "high"),
            ("properties.desired.c", "high"),
        ]);
        assert_eq!(
            desired_patch(&old, &new, &values).map(Value::Object),
            Some(json!({"a": {"b": 1}, "c": "x", "d": null}))
        );
        assert_eq!(desired_patch(&new, &new, &values), None);
    }

    #[test]
    fn module_conditions_may_name_their_collection() {
        let target = Target::parse(
            "FROM devices.modules WHERE moduleId = 'm'",
            ConfigurationKind::Module,
        )
        .unwrap();
        assert!(target.matches(&json!({"deviceId": "d", "moduleId": "m"})));
        assert!(!target.matches(&json!({"deviceId": "d", "moduleId": "n"})));
        assert!(
            Target::parse(
                "FROM devices.modules WHERE moduleId = 'm'",
                ConfigurationKind::Device
            )
            .is_err()
        );
        assert!(matches!(
            Target::parse(" * ", ConfigurationKind::Device),
            Ok(Target::All)
        ));
        assert!(matches!(
            Target::parse("", ConfigurationKind::Device),
            Ok(Target::Nothing)
        ));
    }
}
