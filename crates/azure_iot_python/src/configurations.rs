//! `NativeConfigurationManager`: the Rust half of `IoTHubConfigurationManager` —
//! configurations (automatic device management) over [`azure_iot_service::ServiceClient`].
//! Configurations cross as the hub's JSON and are read into the Rust client's model, whose
//! checks (id, content kinds, number of metrics) run before anything is sent: a `ValueError`.

use std::sync::Arc;

use azure_iot_service::{
    Configuration, ConfigurationContent, ConfigurationQueriesTestInput, IfMatch, ServiceClient,
};
use pyo3::prelude::*;

use crate::service::{call_json, call_unit, connect_rest, from_json};

/// The Rust half of `IoTHubConfigurationManager`.
#[pyclass(module = "azure_iot_rs._native", frozen)]
pub(crate) struct NativeConfigurationManager {
    client: Arc<ServiceClient>,
}

#[pymethods]
impl NativeConfigurationManager {
    /// A configuration manager from a service connection string, with the registry manager's
    /// options.
    #[new]
    #[pyo3(signature = (connection_string, server_verification_cert=None, https_port=None))]
    fn new(
        connection_string: &str,
        server_verification_cert: Option<String>,
        https_port: Option<u16>,
    ) -> PyResult<Self> {
        Ok(Self {
            client: connect_rest(connection_string, server_verification_cert, https_port)?,
        })
    }

    /// Creates the configuration `configuration_json` (the hub's `Configuration` JSON);
    /// returns the hub's answer as JSON.
    fn create_configuration(&self, py: Python<'_>, configuration_json: &str) -> PyResult<String> {
        let configuration: Configuration = from_json("configuration", configuration_json)?;
        let client = self.client.clone();
        call_json(py, async move {
            client.create_configuration(&configuration).await
        })
    }

    /// The configuration `configuration_id` with its metrics, as JSON.
    fn get_configuration(&self, py: Python<'_>, configuration_id: String) -> PyResult<String> {
        let client = self.client.clone();
        call_json(py, async move {
            client.get_configuration(&configuration_id).await
        })
    }

    /// Up to `max_count` configurations as a JSON array.
    fn get_configurations(&self, py: Python<'_>, max_count: u32) -> PyResult<String> {
        let client = self.client.clone();
        call_json(
            py,
            async move { client.list_configurations(max_count).await },
        )
    }

    /// Updates the configuration `configuration_json` if its ETag is still `etag` (`None` or
    /// `*`: any); returns the hub's answer as JSON.
    #[pyo3(signature = (configuration_json, etag=None))]
    fn update_configuration(
        &self,
        py: Python<'_>,
        configuration_json: &str,
        etag: Option<String>,
    ) -> PyResult<String> {
        let configuration: Configuration = from_json("configuration", configuration_json)?;
        let client = self.client.clone();
        call_json(py, async move {
            let condition = IfMatch::etag_or_any(etag.as_deref());
            client.update_configuration(&configuration, condition).await
        })
    }

    /// Deletes the configuration `configuration_id` (if `etag` is given, only if it still has
    /// it).
    #[pyo3(signature = (configuration_id, etag=None))]
    fn delete_configuration(
        &self,
        py: Python<'_>,
        configuration_id: String,
        etag: Option<String>,
    ) -> PyResult<()> {
        let client = self.client.clone();
        call_unit(py, async move {
            let condition = IfMatch::etag_or_any(etag.as_deref());
            client
                .delete_configuration(&configuration_id, condition)
                .await
        })
    }

    /// Asks the hub whether the target condition and metric queries of `input_json` (the
    /// hub's `ConfigurationQueriesTestInput`) parse; returns its answer as JSON.
    fn test_configuration_queries(&self, py: Python<'_>, input_json: &str) -> PyResult<String> {
        let input: ConfigurationQueriesTestInput =
            from_json("configuration_queries_test_input", input_json)?;
        let client = self.client.clone();
        call_json(py, async move {
            client.test_configuration_queries(&input).await
        })
    }

    /// Applies IoT Edge content (`modulesContent`) to the device `device_id`.
    fn apply_configuration_on_edge_device(
        &self,
        py: Python<'_>,
        device_id: String,
        content_json: &str,
    ) -> PyResult<()> {
        let content: ConfigurationContent = from_json("configuration_content", content_json)?;
        let client = self.client.clone();
        call_unit(py, async move {
            client
                .apply_configuration_content(&device_id, &content)
                .await
        })
    }
}
