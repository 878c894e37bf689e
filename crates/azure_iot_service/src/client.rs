//! [`ServiceClient`]: the registry, twins, direct methods, query and statistics over HTTPS,
//! and the way into cloud-to-device messaging over AMQP.

use std::sync::Arc;
use std::time::Duration;

use azure_iot_core::encoding::encode_component;
use azure_iot_core::method::{DirectMethodRequest, DirectMethodResponse};
use azure_iot_core::twin::Twin;
use azure_iot_protocol::identity::check_id;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::credential::SharedAccessPolicy;
use crate::error::{Error, ErrorKind, Result};
use crate::http::{Pipeline, Request};
use crate::messaging::Messaging;
use crate::models::{
    BulkEntry, BulkResult, Device, Module, PurgeResult, RegistryStatistics, ServiceStatistics,
};
use crate::options::{API_VERSION, ServiceClientOptions};
use crate::query::Query;

/// The condition of an update or delete: the `If-Match` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IfMatch {
    /// Whatever the current version is (`If-Match: "*"`).
    #[default]
    Any,
    /// Only if the entity's ETag is this one; otherwise the call fails with
    /// [`ErrorKind::PreconditionFailed`].
    ETag(String),
}

impl IfMatch {
    /// The condition on `etag` if there is one, else [`IfMatch::Any`].
    pub fn etag_or_any(etag: Option<&str>) -> Self {
        etag.map_or(IfMatch::Any, |e| IfMatch::ETag(e.to_owned()))
    }

    /// The `If-Match` header value: the ETag in double quotes (as given if already quoted),
    /// or `"*"`.
    pub fn header_value(&self) -> String {
        match self {
            IfMatch::Any => "\"*\"".to_owned(),
            IfMatch::ETag(etag) if etag.starts_with('"') => etag.clone(),
            IfMatch::ETag(etag) => format!("\"{etag}\""),
        }
    }
}

/// A change to a twin's tags and desired properties, checked before it is sent.
///
/// ```
/// use azure_iot_service::TwinPatch;
/// use serde_json::json;
///
/// let patch = TwinPatch::new()
///     .desired(json!({"telemetryInterval": 5}))?
///     .tags(json!({"floor": 3}))?;
/// assert!(TwinPatch::new().desired(json!(5)).is_err());
/// # Ok::<(), azure_iot_service::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TwinPatch {
    tags: Option<Map<String, Value>>,
    desired: Option<Map<String, Value>>,
}

impl TwinPatch {
    /// An empty patch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Desired properties to merge (`null` removes a key). Must be an object whose keys follow
    /// the twin rules (no `$` prefix, no `.`, ` `, `$` inside; depth ≤ 10).
    pub fn desired(mut self, desired: Value) -> Result<Self> {
        self.desired = Some(checked_section("properties.desired", desired)?);
        Ok(self)
    }

    /// Tags to merge (`null` removes a key). Must be an object.
    pub fn tags(mut self, tags: Value) -> Result<Self> {
        self.tags = Some(checked_section("tags", tags)?);
        Ok(self)
    }

    /// A patch from a whole twin document: `{"tags": {...}, "properties": {"desired": {...}}}`.
    /// Anything else in it (reported properties, unknown members) is refused.
    pub fn from_value(doc: Value) -> Result<Self> {
        let Value::Object(mut doc) = doc else {
            return Err(Error::invalid("a twin patch must be a JSON object"));
        };
        let mut patch = Self::new();
        if let Some(tags) = doc.remove("tags") {
            patch = patch.tags(tags)?;
        }
        if let Some(properties) = doc.remove("properties") {
            let Value::Object(mut properties) = properties else {
                return Err(Error::invalid(
                    "a twin patch's properties must be an object",
                ));
            };
            if let Some(desired) = properties.remove("desired") {
                patch = patch.desired(desired)?;
            }
            if let Some(other) = properties.keys().next() {
                return Err(Error::invalid(format!(
                    "a service twin patch may change only tags and properties.desired, not properties.{other}"
                )));
            }
        }
        if let Some(other) = doc.keys().next() {
            return Err(Error::invalid(format!(
                "a service twin patch may change only tags and properties.desired, not {other}"
            )));
        }
        Ok(patch)
    }

    pub(crate) fn to_wire(&self) -> Value {
        let mut doc = Map::new();
        if let Some(tags) = &self.tags {
            doc.insert("tags".into(), Value::Object(tags.clone()));
        }
        if let Some(desired) = &self.desired {
            let mut properties = Map::new();
            properties.insert("desired".into(), Value::Object(desired.clone()));
            doc.insert("properties".into(), Value::Object(properties));
        }
        Value::Object(doc)
    }
}

fn checked_section(name: &str, value: Value) -> Result<Map<String, Value>> {
    azure_iot_core::twin::validate_patch(&value)
        .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, format!("{name}: {e}"), e))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(Error::invalid(format!("{name} must be a JSON object"))),
    }
}

/// A client of one IoT Hub's service API.
///
/// Cheap to clone: clones share the HTTPS connection pool and the token cache.
///
/// ```no_run
/// # async fn run() -> Result<(), azure_iot_service::Error> {
/// use azure_iot_service::{Device, ServiceClient, ServiceClientOptions};
///
/// let hub = ServiceClient::from_connection_string(
///     &std::env::var("IOTHUB_CONNECTION_STRING").unwrap_or_default(),
///     ServiceClientOptions::default(),
/// )?;
/// let device = hub.create_device(&Device::new("sensor-1")).await?;
/// println!("created {} (etag {:?})", device.device_id, device.etag);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServiceClient {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    http: Pipeline,
    options: ServiceClientOptions,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("host", &self.inner.host)
            .field("policy", &self.inner.http.policy_name())
            .finish()
    }
}

impl ServiceClient {
    /// A client of the hub `host` (`myhub.azure-devices.net`) that signs with `policy`.
    pub fn new(
        host: impl Into<String>,
        policy: SharedAccessPolicy,
        options: ServiceClientOptions,
    ) -> Result<Self> {
        let host = host.into();
        if host.is_empty() {
            return Err(Error::invalid("the hub host name is empty"));
        }
        let http = Pipeline::new(&host, policy, &options.http, API_VERSION)?;
        Ok(Self {
            inner: Arc::new(Inner {
                host,
                http,
                options,
            }),
        })
    }

    /// A client from a connection string with a shared access policy:
    /// `HostName=...;SharedAccessKeyName=...;SharedAccessKey=...`.
    pub fn from_connection_string(
        connection_string: &str,
        options: ServiceClientOptions,
    ) -> Result<Self> {
        let (host, policy) = SharedAccessPolicy::parse_connection_string(connection_string)?;
        Self::new(host, policy, options)
    }

    /// The hub's host name.
    pub fn host_name(&self) -> &str {
        &self.inner.host
    }

    /// The HTTPS pipeline (for the other service modules' queries).
    pub(crate) fn pipeline(&self) -> crate::http::Pipeline {
        self.inner.http.clone()
    }

    pub(crate) async fn send(&self, request: Request) -> Result<crate::http::Reply> {
        self.inner.http.send(request).await
    }

    pub(crate) async fn send_json<T: DeserializeOwned>(&self, request: Request) -> Result<T> {
        self.send(request).await?.json()
    }

    // ---- device identities -------------------------------------------------------------

    /// Creates `device`; fails with [`ErrorKind::AlreadyExists`] if its id is taken. The answer
    /// carries the generated keys, ETag and generation id.
    pub async fn create_device(&self, device: &Device) -> Result<Device> {
        let path = device_path(&device.device_id)?;
        // Without If-Match: a PUT that creates. Not repeated once the hub may have acted.
        self.send_json(
            Request::new(Method::PUT, path)
                .json(device)?
                .idempotent(false),
        )
        .await
    }

    /// The device `device_id`.
    pub async fn get_device(&self, device_id: &str) -> Result<Device> {
        self.send_json(Request::new(Method::GET, device_path(device_id)?))
            .await
    }

    /// Replaces the identity of `device` (status, credentials, capabilities) if `condition`
    /// holds; fails with [`ErrorKind::NotFound`] if it does not exist.
    pub async fn update_device(&self, device: &Device, condition: IfMatch) -> Result<Device> {
        let path = device_path(&device.device_id)?;
        self.send_json(
            Request::new(Method::PUT, path)
                .if_match(&condition)
                .json(device)?,
        )
        .await
    }

    /// Deletes the device (and its modules) if `condition` holds.
    pub async fn delete_device(&self, device_id: &str, condition: IfMatch) -> Result<()> {
        self.send(Request::new(Method::DELETE, device_path(device_id)?).if_match(&condition))
            .await
            .map(drop)
    }

    /// Up to `max` device identities (the hub caps a listing at 1,000). For more, or to filter,
    /// use [`query`](Self::query) on `SELECT * FROM devices`, which pages.
    pub async fn list_devices(&self, max: u32) -> Result<Vec<Device>> {
        self.send_json(Request::new(Method::GET, "/devices").query("top", max.to_string()))
            .await
    }

    // ---- module identities -------------------------------------------------------------

    /// Creates `module`; fails with [`ErrorKind::AlreadyExists`] if it exists.
    pub async fn create_module(&self, module: &Module) -> Result<Module> {
        let path = module_path(&module.device_id, &module.module_id)?;
        self.send_json(
            Request::new(Method::PUT, path)
                .json(module)?
                .idempotent(false),
        )
        .await
    }

    /// The module `module_id` of `device_id`.
    pub async fn get_module(&self, device_id: &str, module_id: &str) -> Result<Module> {
        self.send_json(Request::new(
            Method::GET,
            module_path(device_id, module_id)?,
        ))
        .await
    }

    /// The modules of `device_id`.
    pub async fn list_modules(&self, device_id: &str) -> Result<Vec<Module>> {
        let path = format!("{}/modules", device_path(device_id)?);
        self.send_json(Request::new(Method::GET, path)).await
    }

    /// Replaces the identity of `module` if `condition` holds.
    pub async fn update_module(&self, module: &Module, condition: IfMatch) -> Result<Module> {
        let path = module_path(&module.device_id, &module.module_id)?;
        self.send_json(
            Request::new(Method::PUT, path)
                .if_match(&condition)
                .json(module)?,
        )
        .await
    }

    /// Deletes the module if `condition` holds.
    pub async fn delete_module(
        &self,
        device_id: &str,
        module_id: &str,
        condition: IfMatch,
    ) -> Result<()> {
        let path = module_path(device_id, module_id)?;
        self.send(Request::new(Method::DELETE, path).if_match(&condition))
            .await
            .map(drop)
    }

    // ---- bulk and statistics -----------------------------------------------------------

    /// Creates, updates or deletes up to 100 device identities in one request. Entries fail
    /// one by one: the result lists each failure with the hub's error code.
    pub async fn bulk(&self, entries: &[BulkEntry]) -> Result<BulkResult> {
        if entries.is_empty() || entries.len() > 100 {
            return Err(Error::invalid(format!(
                "a bulk operation takes 1 to 100 entries, not {}",
                entries.len()
            )));
        }
        for entry in entries {
            check_device_id(&entry.device.device_id)?;
        }
        let body: Vec<Value> = entries.iter().map(BulkEntry::to_wire).collect();
        // The hub answers 400 with a result body when some entries failed, and 400 with an
        // error body when the request itself is wrong.
        let request = Request::new(Method::POST, "/devices")
            .json(&body)?
            .idempotent(false)
            .also_ok(400);
        let reply = self.send(request).await?;
        match reply.json::<BulkResult>() {
            Ok(result) => Ok(result),
            Err(_) if reply.status.as_u16() == 400 => {
                Err(reply.into_error(&Method::POST, "/devices"))
            }
            Err(e) => Err(e),
        }
    }

    /// Device counts of the registry.
    pub async fn registry_statistics(&self) -> Result<RegistryStatistics> {
        self.send_json(Request::new(Method::GET, "/statistics/devices"))
            .await
    }

    /// Service statistics (connected devices).
    pub async fn service_statistics(&self) -> Result<ServiceStatistics> {
        self.send_json(Request::new(Method::GET, "/statistics/service"))
            .await
    }

    // ---- twins -------------------------------------------------------------------------

    /// The twin of `device_id`.
    pub async fn get_twin(&self, device_id: &str) -> Result<Twin> {
        self.send_json(Request::new(Method::GET, twin_path(device_id, None)?))
            .await
    }

    /// The twin of module `module_id` of `device_id`.
    pub async fn get_module_twin(&self, device_id: &str, module_id: &str) -> Result<Twin> {
        self.send_json(Request::new(
            Method::GET,
            twin_path(device_id, Some(module_id))?,
        ))
        .await
    }

    /// Merges `patch` into the twin of `device_id` if `condition` holds on the twin's ETag;
    /// returns the new twin. Desired changes reach a connected device at once.
    pub async fn update_twin(
        &self,
        device_id: &str,
        patch: &TwinPatch,
        condition: IfMatch,
    ) -> Result<Twin> {
        self.write_twin(Method::PATCH, device_id, None, patch, condition)
            .await
    }

    /// Replaces the tags and desired properties of the twin of `device_id`.
    pub async fn replace_twin(
        &self,
        device_id: &str,
        twin: &TwinPatch,
        condition: IfMatch,
    ) -> Result<Twin> {
        self.write_twin(Method::PUT, device_id, None, twin, condition)
            .await
    }

    /// Merges `patch` into a module twin.
    pub async fn update_module_twin(
        &self,
        device_id: &str,
        module_id: &str,
        patch: &TwinPatch,
        condition: IfMatch,
    ) -> Result<Twin> {
        self.write_twin(Method::PATCH, device_id, Some(module_id), patch, condition)
            .await
    }

    /// Replaces the tags and desired properties of a module twin.
    pub async fn replace_module_twin(
        &self,
        device_id: &str,
        module_id: &str,
        twin: &TwinPatch,
        condition: IfMatch,
    ) -> Result<Twin> {
        self.write_twin(Method::PUT, device_id, Some(module_id), twin, condition)
            .await
    }

    async fn write_twin(
        &self,
        method: Method,
        device_id: &str,
        module_id: Option<&str>,
        patch: &TwinPatch,
        condition: IfMatch,
    ) -> Result<Twin> {
        let path = twin_path(device_id, module_id)?;
        self.send_json(
            Request::new(method, path)
                .if_match(&condition)
                .json(&patch.to_wire())?,
        )
        .await
    }

    // ---- direct methods ----------------------------------------------------------------

    /// Calls a direct method on `device_id` and returns the device's status and payload.
    ///
    /// Fails with [`ErrorKind::DeviceNotOnline`] if the device is not connected within the
    /// request's connect timeout (0: at once), [`ErrorKind::Timeout`] if it does not answer
    /// within the response timeout (30 s unless the request says otherwise).
    pub async fn invoke_device_method(
        &self,
        device_id: &str,
        request: &DirectMethodRequest,
    ) -> Result<DirectMethodResponse> {
        self.invoke(device_id, None, request).await
    }

    /// Calls a direct method on module `module_id` of `device_id`.
    pub async fn invoke_module_method(
        &self,
        device_id: &str,
        module_id: &str,
        request: &DirectMethodRequest,
    ) -> Result<DirectMethodResponse> {
        self.invoke(device_id, Some(module_id), request).await
    }

    async fn invoke(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        request: &DirectMethodRequest,
    ) -> Result<DirectMethodResponse> {
        check_method(request)?;
        let path = format!("{}/methods", twin_path(device_id, module_id)?);
        // The hub holds the request for up to connect + response timeout.
        let response = request.response_timeout_in_seconds.unwrap_or(30);
        let connect = request.connect_timeout_in_seconds.unwrap_or(0);
        let mut body = request.clone();
        body.response_timeout_in_seconds = Some(response);
        body.connect_timeout_in_seconds = Some(connect);
        let wait = Duration::from_secs(u64::from(response) + u64::from(connect))
            + self.inner.options.http.request_timeout;
        self.send_json(Request::new(Method::POST, path).json(&body)?.timeout(wait))
            .await
    }

    // ---- query and cloud-to-device -----------------------------------------------------

    /// Runs an IoT Hub query (`SELECT * FROM devices WHERE ...`); the answer pages
    /// automatically. Items are raw JSON; see [`query_twins`](Self::query_twins) for typed
    /// twins.
    pub fn query(&self, sql: impl Into<String>) -> Query<Value> {
        Query::new(self.inner.http.clone(), "/devices/query", sql)
    }

    /// Every device's twin (identity fields, tags and properties), page by page: the
    /// registry listing without the 1,000-device cap of [`list_devices`](Self::list_devices).
    pub fn list_device_twins(&self) -> Query<Twin> {
        self.query_twins("SELECT * FROM devices")
    }

    /// Runs a query whose items are twins (`SELECT * FROM devices` or `... FROM devices.modules`).
    pub fn query_twins(&self, sql: impl Into<String>) -> Query<Twin> {
        Query::new(self.inner.http.clone(), "/devices/query", sql)
    }

    /// Removes every cloud-to-device message waiting for `device_id`.
    pub async fn purge_c2d_queue(&self, device_id: &str) -> Result<PurgeResult> {
        let path = format!("{}/commands", device_path(device_id)?);
        self.send_json(Request::new(Method::DELETE, path)).await
    }

    /// Opens the AMQP connection for cloud-to-device messages and their feedback.
    pub async fn messaging(&self) -> Result<Messaging> {
        Messaging::open(
            &self.inner.host,
            self.inner.options.amqp_port,
            self.inner.http.tls().clone(),
            self.inner.http.tokens().clone(),
            self.inner.options.http.request_timeout,
        )
        .await
    }
}

/// Checks a method call against the hub's rules before it is sent: a name, a response timeout
/// of 5 to 300 s and a connect timeout of 0 to 300 s.
pub(crate) fn check_method(request: &DirectMethodRequest) -> Result<()> {
    if request.method_name.is_empty() {
        return Err(Error::invalid("the method name is empty"));
    }
    if let Some(t) = request.response_timeout_in_seconds
        && !(5..=300).contains(&t)
    {
        return Err(Error::invalid(format!(
            "the response timeout must be 5 to 300 seconds, not {t}"
        )));
    }
    if let Some(t) = request.connect_timeout_in_seconds
        && t > 300
    {
        return Err(Error::invalid(format!(
            "the connect timeout must be 0 to 300 seconds, not {t}"
        )));
    }
    Ok(())
}

fn check_device_id(id: &str) -> Result<()> {
    check_id(id)
        .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, format!("device id: {e}"), e))
}

pub(crate) fn device_path(device_id: &str) -> Result<String> {
    check_device_id(device_id)?;
    Ok(format!("/devices/{}", encode_component(device_id)))
}

fn module_path(device_id: &str, module_id: &str) -> Result<String> {
    check_id(module_id).map_err(|e| {
        Error::with_source(ErrorKind::InvalidArgument, format!("module id: {e}"), e)
    })?;
    Ok(format!(
        "{}/modules/{}",
        device_path(device_id)?,
        encode_component(module_id)
    ))
}

fn twin_path(device_id: &str, module_id: Option<&str>) -> Result<String> {
    check_device_id(device_id)?;
    let mut path = format!("/twins/{}", encode_component(device_id));
    if let Some(module_id) = module_id {
        check_id(module_id).map_err(|e| {
            Error::with_source(ErrorKind::InvalidArgument, format!("module id: {e}"), e)
        })?;
        path.push_str("/modules/");
        path.push_str(&encode_component(module_id));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn if_match_quotes_etags_once() {
        assert_eq!(IfMatch::Any.header_value(), "\"*\"");
        assert_eq!(IfMatch::ETag("abc".into()).header_value(), "\"abc\"");
        assert_eq!(IfMatch::ETag("\"abc\"".into()).header_value(), "\"abc\"");
    }

    #[test]
    fn twin_patches_are_checked() {
        assert!(TwinPatch::from_value(json!([1])).is_err());
        assert!(TwinPatch::from_value(json!({"properties": {"reported": {}}})).is_err());
        assert!(TwinPatch::from_value(json!({"deviceId": "x"})).is_err());
        assert!(TwinPatch::new().desired(json!({"$bad": 1})).is_err());
        let patch = TwinPatch::from_value(
            json!({"tags": {"a": 1}, "properties": {"desired": {"b": null}}}),
        )
        .unwrap();
        assert_eq!(
            patch.to_wire(),
            json!({"tags": {"a": 1}, "properties": {"desired": {"b": null}}})
        );
    }

    #[test]
    fn paths_encode_ids_and_refuse_bad_ones() {
        assert_eq!(device_path("a:b").unwrap(), "/devices/a%3Ab");
        assert_eq!(
            twin_path("d", Some("m$1")).unwrap(),
            "/twins/d/modules/m%241"
        );
        for bad in ["", "a/b", "a b", "é"] {
            let err = device_path(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
        assert!(module_path("d", "").is_err());
    }
}
