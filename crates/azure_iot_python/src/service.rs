//! `NativeRegistryManager`: the Rust half of `IoTHubRegistryManager`, over
//! [`azure_iot_service::ServiceClient`]. Results travel as the hub's JSON text, from which the
//! Python model classes (`Device`, `Twin`, `CloudToDeviceMethodResult`) are built.

use std::sync::Arc;

use azure_iot_core::method::DirectMethodRequest;
use azure_iot_service::{
    AuthenticationMechanism, AuthenticationType, CloudToDeviceMessage, Device, DeviceStatus,
    FeedbackMode, IfMatch, Messaging, Module, ServiceClient, ServiceClientOptions, SymmetricKey,
    TwinPatch,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
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

fn parse_status(status: &str) -> PyResult<DeviceStatus> {
    match status {
        "enabled" => Ok(DeviceStatus::Enabled),
        "disabled" => Ok(DeviceStatus::Disabled),
        other => Err(PyValueError::new_err(format!(
            "status: {other:?} is not one of enabled, disabled"
        ))),
    }
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

impl NativeRegistryManager {
    /// Creates `device` on the hub; returns it as JSON.
    fn create(&self, py: Python<'_>, device: Device) -> PyResult<String> {
        let inner = self.inner.clone();
        wait(py, async move {
            let created = inner
                .client
                .create_device(&device)
                .await
                .map_err(service_error)?;
            to_json(&created)
        })
    }
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
        let client = ServiceClient::from_connection_string(connection_string, options)
            .map_err(service_error)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                messaging: Mutex::new(None),
            }),
        })
    }

    /// Creates a device with keys (empty keys: the hub generates them); returns it as JSON.
    #[pyo3(signature = (device_id, primary_key, secondary_key, status, iot_edge=false))]
    fn create_device_with_sas(
        &self,
        py: Python<'_>,
        device_id: String,
        primary_key: String,
        secondary_key: String,
        status: &str,
        iot_edge: bool,
    ) -> PyResult<String> {
        let device = Device::new(device_id)
            .with_symmetric_key(primary_key, secondary_key)
            .with_status(parse_status(status)?, None)
            .with_iot_edge(iot_edge);
        self.create(py, device)
    }

    /// Creates a device authenticated by self-signed certificates of these thumbprints.
    #[pyo3(signature = (device_id, primary_thumbprint, secondary_thumbprint, status, iot_edge=false))]
    fn create_device_with_x509(
        &self,
        py: Python<'_>,
        device_id: String,
        primary_thumbprint: String,
        secondary_thumbprint: Option<String>,
        status: &str,
        iot_edge: bool,
    ) -> PyResult<String> {
        let device = Device::new(device_id)
            .with_x509_thumbprints(primary_thumbprint, secondary_thumbprint)
            .with_status(parse_status(status)?, None)
            .with_iot_edge(iot_edge);
        self.create(py, device)
    }

    /// Creates a module with keys (empty keys: the hub generates them); returns it as JSON.
    fn create_module_with_sas(
        &self,
        py: Python<'_>,
        device_id: String,
        module_id: String,
        primary_key: String,
        secondary_key: String,
    ) -> PyResult<String> {
        let module =
            Module::new(device_id, module_id).with_authentication(AuthenticationMechanism {
                kind: AuthenticationType::Sas,
                symmetric_key: Some(SymmetricKey {
                    primary_key,
                    secondary_key,
                }),
                x509_thumbprint: None,
            });
        let inner = self.inner.clone();
        wait(py, async move {
            let created = inner
                .client
                .create_module(&module)
                .await
                .map_err(service_error)?;
            to_json(&created)
        })
    }

    /// The device as JSON.
    fn get_device(&self, py: Python<'_>, device_id: String) -> PyResult<String> {
        let inner = self.inner.clone();
        wait(py, async move {
            let device = inner
                .client
                .get_device(&device_id)
                .await
                .map_err(service_error)?;
            to_json(&device)
        })
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
        wait(py, async move {
            inner
                .client
                .delete_device(&device_id, if_match(etag.as_deref()))
                .await
                .map_err(service_error)
        })
    }

    /// The device's twin as JSON.
    fn get_twin(&self, py: Python<'_>, device_id: String) -> PyResult<String> {
        let inner = self.inner.clone();
        wait(py, async move {
            let twin = inner
                .client
                .get_twin(&device_id)
                .await
                .map_err(service_error)?;
            to_json(&twin)
        })
    }

    /// Merges `twin_json` (`{"tags": …, "properties": {"desired": …}}`) into the twin; returns
    /// the new twin as JSON.
    #[pyo3(signature = (device_id, twin_json, etag=None))]
    fn update_twin(
        &self,
        py: Python<'_>,
        device_id: String,
        twin_json: &str,
        etag: Option<String>,
    ) -> PyResult<String> {
        let doc: Value = serde_json::from_str(twin_json)
            .map_err(|e| PyValueError::new_err(format!("device_twin is not JSON: {e}")))?;
        let patch = TwinPatch::from_value(doc).map_err(service_error)?;
        let inner = self.inner.clone();
        wait(py, async move {
            let twin = inner
                .client
                .update_twin(&device_id, &patch, if_match(etag.as_deref()))
                .await
                .map_err(service_error)?;
            to_json(&twin)
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
