//! `NativeRegistryManager`: the Rust half of `IoTHubRegistryManager`, over
//! [`azure_iot_service::ServiceClient`]. Identities, twins and configurations cross as the
//! hub's JSON text both ways: the Python models (`Device`, `Module`, `Twin`, `ExportImportDevice`,
//! …) write it, this module reads it into the Rust client's typed models (so malformed input is
//! a `ValueError` naming the argument, before anything is sent) and returns the hub's answer as
//! JSON for the Python models to read. The helpers here ([`connect`], [`from_json`],
//! [`call_json`]) are shared with the job and configuration managers (modules `jobs`,
//! `configurations`).

use std::future::Future;
use std::sync::Arc;

use azure_iot_core::method::DirectMethodRequest;
use azure_iot_service::{
    BulkEntry, BulkMode, CloudToDeviceMessage, Device, FeedbackMode, IfMatch, Messaging, Module,
    Query, ServiceClient, ServiceClientOptions, TwinPatch,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::errors::service_error;
use crate::runtime::wait;

struct Inner {
    client: ServiceClient,
    /// The AMQP connection for cloud-to-device messages, opened on first use.
    messaging: Mutex<Option<Arc<Messaging>>>,
}

/// The Rust half of `IoTHubRegistryManager`.
#[pyclass(module = "azure_iot_rs._native", frozen)]
pub(crate) struct NativeRegistryManager {
    inner: Arc<Inner>,
}

fn to_json<T: serde::Serialize>(value: &T) -> PyResult<String> {
    serde_json::to_string(value)
        .map_err(|e| PyValueError::new_err(format!("cannot encode the hub's answer: {e}")))
}

fn if_match(etag: Option<&str>) -> IfMatch {
    IfMatch::etag_or_any(etag)
}

/// Reads `text`, the JSON the Python model `what` wrote, into the Rust client's model; a
/// `ValueError` naming `what` if it does not fit.
pub(crate) fn from_json<T: DeserializeOwned>(what: &str, text: &str) -> PyResult<T> {
    serde_json::from_str(text)
        .map_err(|e| PyValueError::new_err(format!("{what} is not valid: {e}")))
}

/// Runs `operation` with the GIL released and returns its answer as JSON text.
pub(crate) fn call_json<T, F>(py: Python<'_>, operation: F) -> PyResult<String>
where
    T: Serialize + Send + 'static,
    F: Future<Output = azure_iot_service::Result<T>> + Send + 'static,
{
    wait(py, async move {
        to_json(&operation.await.map_err(service_error)?)
    })
}

/// Runs `operation`, which answers nothing, with the GIL released.
pub(crate) fn call_unit<F>(py: Python<'_>, operation: F) -> PyResult<()>
where
    F: Future<Output = azure_iot_service::Result<()>> + Send + 'static,
{
    wait(py, async move { operation.await.map_err(service_error) })
}

/// One page of a query as Python's `QueryResult` reads it: `(item type, continuation token,
/// items as a JSON array)`; read with the GIL released.
pub(crate) type Page = (Option<String>, Option<String>, String);

/// Reads the next page of `query` with the GIL released.
pub(crate) fn next_page<T>(py: Python<'_>, mut query: Query<T>) -> PyResult<Page>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    wait(py, async move {
        let items = query
            .next_page()
            .await
            .map_err(service_error)?
            .unwrap_or_default();
        Ok((
            query.item_type().map(str::to_owned),
            query.continuation_token().map(str::to_owned),
            to_json(&items)?,
        ))
    })
}

/// A shared service client for the managers that only use REST (jobs, configurations).
pub(crate) fn connect_rest(
    connection_string: &str,
    server_verification_cert: Option<String>,
    https_port: Option<u16>,
) -> PyResult<Arc<ServiceClient>> {
    connect(
        connection_string,
        server_verification_cert,
        https_port,
        None,
    )
    .map(Arc::new)
}

/// A service client from the managers' constructor arguments (see
/// [`NativeRegistryManager::new`]); a bad connection string or CA fails here.
pub(crate) fn connect(
    connection_string: &str,
    server_verification_cert: Option<String>,
    https_port: Option<u16>,
    amqp_port: Option<u16>,
) -> PyResult<ServiceClient> {
    let mut options = ServiceClientOptions::default();
    if let Some(ca) = server_verification_cert {
        options = options.trusted_ca_pem(ca);
    }
    if let Some(port) = https_port {
        options = options.https_port(port);
    }
    if let Some(port) = amqp_port {
        options = options.amqp_port(port);
    }
    // ServiceClient::new builds the TLS configuration, so a bad CA fails here.
    let _runtime = crate::runtime::runtime().enter();
    ServiceClient::from_connection_string(connection_string, options).map_err(service_error)
}

/// A bulk entry's `importMode` as the Rust client's [`BulkMode`].
fn bulk_mode(mode: &str) -> PyResult<BulkMode> {
    Ok(match mode {
        "create" => BulkMode::Create,
        "update" => BulkMode::Update,
        "updateIfMatchETag" => BulkMode::UpdateIfMatchETag,
        "delete" => BulkMode::Delete,
        "deleteIfMatchETag" => BulkMode::DeleteIfMatchETag,
        other => {
            return Err(PyValueError::new_err(format!(
                "devices: import_mode {other:?} is not one of create, update, updateIfMatchETag, \
                 delete, deleteIfMatchETag"
            )));
        }
    })
}

fn method_request(
    method_name: String,
    payload_json: &str,
    response_timeout: Option<u32>,
    connect_timeout: Option<u32>,
) -> PyResult<DirectMethodRequest> {
    let payload: Value = serde_json::from_str(payload_json)
        .map_err(|e| PyValueError::new_err(format!("payload is not JSON: {e}")))?;
    let mut request = DirectMethodRequest::new(method_name, payload);
    if let Some(seconds) = response_timeout {
        request = request.with_response_timeout(seconds);
    }
    if let Some(seconds) = connect_timeout {
        request = request.with_connect_timeout(seconds);
    }
    Ok(request)
}

#[pymethods]
impl NativeRegistryManager {
    /// A registry manager from a service connection string (`HostName=…;SharedAccessKeyName=…;
    /// SharedAccessKey=…`); `server_verification_cert` (PEM) replaces the system's roots and
    /// `https_port` / `amqp_port` the hub's standard ports (for the emulator).
    #[new]
    #[pyo3(signature = (connection_string, server_verification_cert=None, https_port=None, amqp_port=None))]
    fn new(
        connection_string: &str,
        server_verification_cert: Option<String>,
        https_port: Option<u16>,
        amqp_port: Option<u16>,
    ) -> PyResult<Self> {
        let client = connect(
            connection_string,
            server_verification_cert,
            https_port,
            amqp_port,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                messaging: Mutex::new(None),
            }),
        })
    }

    /// Creates (`create`) or replaces (if `etag` holds; `None`: any) the device `device_json`,
    /// the hub's `Device` JSON; returns the hub's answer as JSON.
    #[pyo3(signature = (device_json, create, etag=None))]
    fn put_device(
        &self,
        py: Python<'_>,
        device_json: &str,
        create: bool,
        etag: Option<String>,
    ) -> PyResult<String> {
        let device: Device = from_json("device", device_json)?;
        let inner = self.inner.clone();
        call_json(py, async move {
            if create {
                inner.client.create_device(&device).await
            } else {
                let condition = if_match(etag.as_deref());
                inner.client.update_device(&device, condition).await
            }
        })
    }

    /// The device as JSON.
    fn get_device(&self, py: Python<'_>, device_id: String) -> PyResult<String> {
        let inner = self.inner.clone();
        call_json(py, async move { inner.client.get_device(&device_id).await })
    }

    /// Up to `max` devices (the hub's page of at most 1,000) as a JSON array.
    fn get_devices(&self, py: Python<'_>, max: u32) -> PyResult<String> {
        let inner = self.inner.clone();
        call_json(py, async move { inner.client.list_devices(max).await })
    }

    /// Deletes the device (if `etag` is given, only if it still has it).
    #[pyo3(signature = (device_id, etag=None))]
    fn delete_device(
        &self,
        py: Python<'_>,
        device_id: String,
        etag: Option<String>,
    ) -> PyResult<()> {
        let inner = self.inner.clone();
        call_unit(py, async move {
            let condition = if_match(etag.as_deref());
            inner.client.delete_device(&device_id, condition).await
        })
    }

    /// Creates (`create`) or replaces (if `etag` holds) the module `module_json`, the hub's
    /// `Module` JSON; returns the hub's answer as JSON.
    #[pyo3(signature = (module_json, create, etag=None))]
    fn put_module(
        &self,
        py: Python<'_>,
        module_json: &str,
        create: bool,
        etag: Option<String>,
    ) -> PyResult<String> {
        let module: Module = from_json("module", module_json)?;
        let inner = self.inner.clone();
        call_json(py, async move {
            if create {
                inner.client.create_module(&module).await
            } else {
                let condition = if_match(etag.as_deref());
                inner.client.update_module(&module, condition).await
            }
        })
    }

    /// The module as JSON.
    fn get_module(&self, py: Python<'_>, device_id: String, module_id: String) -> PyResult<String> {
        let inner = self.inner.clone();
        call_json(py, async move {
            inner.client.get_module(&device_id, &module_id).await
        })
    }

    /// The device's modules as a JSON array.
    fn get_modules(&self, py: Python<'_>, device_id: String) -> PyResult<String> {
        let inner = self.inner.clone();
        call_json(
            py,
            async move { inner.client.list_modules(&device_id).await },
        )
    }

    /// Deletes the module (if `etag` is given, only if it still has it).
    #[pyo3(signature = (device_id, module_id, etag=None))]
    fn delete_module(
        &self,
        py: Python<'_>,
        device_id: String,
        module_id: String,
        etag: Option<String>,
    ) -> PyResult<()> {
        let inner = self.inner.clone();
        call_unit(py, async move {
            let condition = if_match(etag.as_deref());
            inner
                .client
                .delete_module(&device_id, &module_id, condition)
                .await
        })
    }

    /// One bulk registry operation: `entries` are `(importMode, device_json)` pairs; returns
    /// the hub's `BulkRegistryOperationResult` as JSON.
    fn bulk(&self, py: Python<'_>, entries: Vec<(String, String)>) -> PyResult<String> {
        let entries = entries
            .iter()
            .map(|(mode, device)| {
                Ok(BulkEntry::new(
                    bulk_mode(mode)?,
                    from_json("devices", device)?,
                ))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let inner = self.inner.clone();
        call_json(py, async move { inner.client.bulk(&entries).await })
    }

    /// The registry's device counts as JSON.
    fn get_device_registry_statistics(&self, py: Python<'_>) -> PyResult<String> {
        let inner = self.inner.clone();
        call_json(py, async move { inner.client.registry_statistics().await })
    }

    /// The service's statistics (connected devices) as JSON.
    fn get_service_statistics(&self, py: Python<'_>) -> PyResult<String> {
        let inner = self.inner.clone();
        call_json(py, async move { inner.client.service_statistics().await })
    }

    /// One page of an IoT Hub query: `(item type, continuation token, items as a JSON array)`.
    #[pyo3(signature = (sql, continuation_token=None, max_item_count=None))]
    fn query(
        &self,
        py: Python<'_>,
        sql: String,
        continuation_token: Option<String>,
        max_item_count: Option<u32>,
    ) -> PyResult<Page> {
        let mut query = self.inner.client.query(sql);
        if let Some(token) = continuation_token {
            query = query.continue_from(token);
        }
        if let Some(size) = max_item_count {
            query = query.page_size(size);
        }
        next_page(py, query)
    }

    /// The twin of the device, or of its module `module_id`, as JSON.
    #[pyo3(signature = (device_id, module_id=None))]
    fn get_twin(
        &self,
        py: Python<'_>,
        device_id: String,
        module_id: Option<String>,
    ) -> PyResult<String> {
        let inner = self.inner.clone();
        call_json(py, async move {
            match module_id {
                Some(module_id) => inner.client.get_module_twin(&device_id, &module_id).await,
                None => inner.client.get_twin(&device_id).await,
            }
        })
    }

    /// Merges (`replace` false) or replaces `twin_json` (`{"tags": …, "properties":
    /// {"desired": …}}`) into the twin of the device or of its module; returns the new twin as
    /// JSON.
    #[pyo3(signature = (device_id, module_id, twin_json, replace, etag=None))]
    fn update_twin(
        &self,
        py: Python<'_>,
        device_id: String,
        module_id: Option<String>,
        twin_json: &str,
        replace: bool,
        etag: Option<String>,
    ) -> PyResult<String> {
        let doc: Value = from_json("twin", twin_json)?;
        let patch = TwinPatch::from_value(doc).map_err(service_error)?;
        let inner = self.inner.clone();
        call_json(py, async move {
            let client = &inner.client;
            let condition = if_match(etag.as_deref());
            match (module_id, replace) {
                (Some(m), false) => {
                    client
                        .update_module_twin(&device_id, &m, &patch, condition)
                        .await
                }
                (Some(m), true) => {
                    client
                        .replace_module_twin(&device_id, &m, &patch, condition)
                        .await
                }
                (None, false) => client.update_twin(&device_id, &patch, condition).await,
                (None, true) => client.replace_twin(&device_id, &patch, condition).await,
            }
        })
    }

    /// Calls a direct method on `device_id`, or on its module `module_id`; returns `(status,
    /// payload_json)`.
    #[pyo3(signature = (device_id, module_id, method_name, payload_json, response_timeout=None, connect_timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn invoke_method(
        &self,
        py: Python<'_>,
        device_id: String,
        module_id: Option<String>,
        method_name: String,
        payload_json: &str,
        response_timeout: Option<u32>,
        connect_timeout: Option<u32>,
    ) -> PyResult<(i32, String)> {
        let request = method_request(method_name, payload_json, response_timeout, connect_timeout)?;
        let inner = self.inner.clone();
        wait(py, async move {
            let answer = match module_id {
                Some(module_id) => {
                    inner
                        .client
                        .invoke_module_method(&device_id, &module_id, &request)
                        .await
                }
                None => {
                    inner
                        .client
                        .invoke_device_method(&device_id, &request)
                        .await
                }
            }
            .map_err(service_error)?;
            Ok((answer.status, answer.payload.to_string()))
        })
    }

    /// Sends a cloud-to-device message with application properties.
    fn send_c2d_message(
        &self,
        py: Python<'_>,
        device_id: String,
        data: &[u8],
        properties: Vec<(String, String)>,
    ) -> PyResult<()> {
        let mut message = CloudToDeviceMessage::new(data.to_vec());
        for (name, value) in properties {
            message = c2d_property(message, name, value)?;
        }
        let inner = self.inner.clone();
        wait(py, async move {
            let mut slot = inner.messaging.lock().await;
            let messaging = match slot.as_ref() {
                Some(messaging) => messaging.clone(),
                None => {
                    let opened = inner.client.messaging().await.map_err(service_error)?;
                    slot.insert(Arc::new(opened)).clone()
                }
            };
            drop(slot);
            messaging
                .send(&device_id, message)
                .await
                .map(drop)
                .map_err(service_error)
        })
    }
}

/// One entry of `send_c2d_message`'s `properties`, read as azure-iot-hub reads it: the keys
/// `messageId`, `correlationId`, `contentType`, `contentEncoding` and `expiryTimeUtc`
/// (milliseconds since the epoch) are the message's system properties, `iothub-ack` (`full`,
/// `positive`, `negative`, `none`) asks for feedback, every other key is an application
/// property.
fn c2d_property(
    message: CloudToDeviceMessage,
    name: String,
    value: String,
) -> PyResult<CloudToDeviceMessage> {
    Ok(match name.as_str() {
        "messageId" => message.message_id(value),
        "correlationId" => message.correlation_id(value),
        "contentType" => message.content_type(value),
        "contentEncoding" => message.content_encoding(value),
        "expiryTimeUtc" => {
            let millis: u64 = value.trim().parse().map_err(|_| {
                PyValueError::new_err(format!(
                    "properties: expiryTimeUtc {value:?} is not milliseconds since the epoch"
                ))
            })?;
            message.expiry_time(std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis))
        }
        "iothub-ack" => message.feedback(match value.as_str() {
            "full" => FeedbackMode::Full,
            "positive" => FeedbackMode::Positive,
            "negative" => FeedbackMode::Negative,
            "none" => FeedbackMode::None,
            other => {
                return Err(PyValueError::new_err(format!(
                    "properties: iothub-ack {other:?} is not one of full, positive, negative, none"
                )));
            }
        }),
        _ => message.property(name, value),
    })
}
