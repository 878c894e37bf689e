//! Configurations (automatic device management) on [`ServiceClient`]: create, get, update
//! with an ETag, delete, list, test queries, and apply IoT Edge content to one device.
//!
//! The models are `azure_iot_protocol::configuration`'s, the ones the emulator serves, and
//! its rules run before anything is sent: an id outside the hub's character set, content that
//! is not `properties.desired.*`, several content kinds at once or more than five custom
//! metrics fail with [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument).
//! Query syntax is the hub's to judge: [`ServiceClient::test_configuration_queries`] asks it.

use azure_iot_core::encoding::encode_component;
use azure_iot_protocol::configuration::{
    Configuration, ConfigurationContent, ConfigurationQueriesTestInput,
    ConfigurationQueriesTestResponse, validate_id,
};
use reqwest::Method;

use crate::client::{IfMatch, ServiceClient};
use crate::error::{Error, ErrorKind, Result};
use crate::http::Request;

/// `/configurations/{id}`, after checking the id.
fn configuration_path(id: &str) -> Result<String> {
    validate_id(id)
        .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, e.to_string(), e))?;
    Ok(format!("/configurations/{}", encode_component(id)))
}

/// Checks `configuration` as the hub would before it is sent.
fn check(configuration: &Configuration) -> Result<()> {
    configuration
        .validate()
        .map(drop)
        .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, e.to_string(), e))
}

impl ServiceClient {
    /// Creates `configuration`; fails with [`ErrorKind::AlreadyExists`] if its id is taken.
    /// The answer carries the hub's ETag, creation time and metrics.
    pub async fn create_configuration(
        &self,
        configuration: &Configuration,
    ) -> Result<Configuration> {
        check(configuration)?;
        let path = configuration_path(&configuration.id)?;
        // A create is not repeated after reaching the hub: a retry would see 409.
        self.send_json(
            Request::new(Method::PUT, path)
                .idempotent(false)
                .json(configuration)?,
        )
        .await
    }

    /// The configuration `id` with its current system and custom metrics.
    pub async fn get_configuration(&self, id: &str) -> Result<Configuration> {
        self.send_json(Request::new(Method::GET, configuration_path(id)?))
            .await
    }

    /// Updates `configuration` (target condition, priority, labels, metrics; the hub refuses
    /// a content change with [`ErrorKind::BadRequest`]) if `condition` holds.
    pub async fn update_configuration(
        &self,
        configuration: &Configuration,
        condition: IfMatch,
    ) -> Result<Configuration> {
        check(configuration)?;
        let path = configuration_path(&configuration.id)?;
        self.send_json(
            Request::new(Method::PUT, path)
                .if_match(&condition)
                .json(configuration)?,
        )
        .await
    }

    /// Deletes the configuration `id` if `condition` holds; the twins it configured fall back
    /// to the next configuration in line, or lose its settings.
    pub async fn delete_configuration(&self, id: &str, condition: IfMatch) -> Result<()> {
        self.send(Request::new(Method::DELETE, configuration_path(id)?).if_match(&condition))
            .await
            .map(drop)
    }

    /// Up to `max` configurations (the hub holds at most 100).
    pub async fn list_configurations(&self, max: u32) -> Result<Vec<Configuration>> {
        self.send_json(Request::new(Method::GET, "/configurations").query("top", max.to_string()))
            .await
    }

    /// Asks the hub whether a target condition and custom metric queries parse; the answer
    /// names each error (empty strings when all is well).
    pub async fn test_configuration_queries(
        &self,
        input: &ConfigurationQueriesTestInput,
    ) -> Result<ConfigurationQueriesTestResponse> {
        self.send_json(
            Request::new(Method::POST, "/configurations/testQueries")
                .idempotent(true)
                .json(input)?,
        )
        .await
    }

    /// Applies IoT Edge `content` to one device: each `modulesContent` entry becomes that
    /// module twin's desired properties. `modulesContent` is required and `moduleContent`
    /// does not apply ([`ErrorKind::InvalidArgument`] before sending).
    pub async fn apply_configuration_content(
        &self,
        device_id: &str,
        content: &ConfigurationContent,
    ) -> Result<()> {
        if content
            .modules_content
            .as_ref()
            .is_none_or(|m| m.is_empty())
        {
            return Err(Error::invalid(
                "applying configuration content needs a non-empty modulesContent",
            ));
        }
        if content
            .module_content
            .as_ref()
            .is_some_and(|m| !m.is_empty())
        {
            return Err(Error::invalid(
                "moduleContent does not apply to a device; use modulesContent",
            ));
        }
        content
            .check_modules()
            .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, e.to_string(), e))?;
        let path = format!(
            "{}/applyConfigurationContent",
            crate::client::device_path(device_id)?
        );
        self.send(Request::new(Method::POST, path).json(content)?)
            .await
            .map(drop)
    }
}
