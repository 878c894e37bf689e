//! `NativeProvisioningClient`: the Rust half of `ProvisioningDeviceClient` (sync and aio share
//! it; the Python classes add `provisioning_payload`, the result models and the official
//! client's exception chaining).
//!
//! Created from the attestation and options, checked at once (a bad key, certificate, CA,
//! id scope or registration id fails at creation, as a `ValueError`); `register` runs
//! [`azure_iot_provisioning_device::ProvisioningDeviceClient::register`] on the one runtime —
//! blocking with the GIL released and Ctrl-C honoured, or as an awaitable — and hands Python
//! the operation id, the status and DPS's registration record as JSON text.

use std::time::Duration;

use azure_iot_provisioning_device::{
    Attestation, ProvisioningDeviceClient, ProvisioningDeviceClientBuilder,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde_json::Value;

use crate::device::{check_ca, seconds_arg, transport_arg};
use crate::errors::provisioning_error;
use crate::runtime::{awaitable, wait};

/// A finished registration as Python gets it: `(operation_id, status, registration_state_json)`.
type Registered = (String, String, String);

/// The Rust half of the Python `ProvisioningDeviceClient`.
#[pyclass(module = "azure_iot_rs._native", frozen)]
pub(crate) struct NativeProvisioningClient {
    /// The settings, checked by building them once at creation; each `register` builds them
    /// again with its payload.
    builder: ProvisioningDeviceClientBuilder,
}

#[pymethods]
impl NativeProvisioningClient {
    /// Checks the attestation and options and makes a client; nothing is sent until
    /// `register`. `auth` is `"symmetric_key"` (`credential` = the key, base64) or `"x509"`
    /// (`credential` = (cert PEM, key PEM)). `gateway_hostname`, when given, is dialled instead
    /// of `provisioning_host`.
    #[new]
    #[pyo3(signature = (auth, credential, provisioning_host, registration_id, id_scope,
        server_verification_cert=None, transport="mqtt", gateway_hostname=None, port=None,
        sastoken_ttl=None, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        auth: &str,
        credential: &Bound<'_, PyAny>,
        provisioning_host: String,
        registration_id: String,
        id_scope: String,
        server_verification_cert: Option<String>,
        transport: &str,
        gateway_hostname: Option<String>,
        port: Option<u16>,
        sastoken_ttl: Option<u64>,
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        let attestation = match auth {
            "symmetric_key" => {
                let key: String = credential.extract()?;
                Attestation::symmetric_key(&key)
                    .map_err(|_| PyValueError::new_err("symmetric_key is not valid base64"))?
            }
            "x509" => {
                let (cert, key): (String, String) = credential.extract()?;
                Attestation::x509_pem(&cert, &key)
                    .map_err(|e| PyValueError::new_err(format!("x509: {e}")))?
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "auth: {other:?} is not one of symmetric_key, x509"
                )));
            }
        };
        let host = gateway_hostname.unwrap_or(provisioning_host);
        if host.is_empty() {
            return Err(PyValueError::new_err("provisioning_host must not be empty"));
        }
        let mut builder = ProvisioningDeviceClient::builder(id_scope, attestation)
            .registration_id(registration_id)
            .global_endpoint(host)
            .transport(transport_arg(transport)?);
        if let Some(ca) = server_verification_cert {
            check_ca(&ca)?;
            builder = builder.trusted_ca_pem(ca);
        }
        if let Some(port) = port {
            builder = builder.port(port);
        }
        if let Some(seconds) = sastoken_ttl {
            builder = builder.token_ttl(Duration::from_secs(seconds));
        }
        if let Some(seconds) = timeout {
            builder = builder.timeout(seconds_arg("timeout", seconds)?);
        }
        builder.clone().build().map_err(provisioning_error)?;
        Ok(Self { builder })
    }

    /// Registers (blocking, GIL released): `(operation_id, status, registration_state_json)`.
    /// `payload_json` is the request's `payload` as JSON text.
    #[pyo3(signature = (payload_json=None))]
    fn register(&self, py: Python<'_>, payload_json: Option<&str>) -> PyResult<Registered> {
        wait(py, register(self.client(payload_json)?))
    }

    /// Registers (awaitable).
    #[pyo3(signature = (payload_json=None))]
    fn register_async<'py>(
        &self,
        py: Python<'py>,
        payload_json: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, register(self.client(payload_json)?))
    }
}

impl NativeProvisioningClient {
    /// The client with `payload_json` (if any) as the register request's payload.
    fn client(&self, payload_json: Option<&str>) -> PyResult<ProvisioningDeviceClient> {
        let mut builder = self.builder.clone();
        if let Some(text) = payload_json {
            let payload: Value = serde_json::from_str(text).map_err(|e| {
                PyValueError::new_err(format!("provisioning_payload is not JSON: {e}"))
            })?;
            builder = builder.payload(payload);
        }
        builder.build().map_err(provisioning_error)
    }
}

async fn register(client: ProvisioningDeviceClient) -> PyResult<Registered> {
    let result = client.register().await.map_err(provisioning_error)?;
    let status = serde_json::to_value(result.status())
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "assigned".to_owned());
    let state = serde_json::to_string(result.state())
        .map_err(|e| crate::errors::ClientError::new_err(format!("the registration state: {e}")))?;
    Ok((result.operation_id().to_owned(), status, state))
}
