//! [`ModuleClient`]: a module identity's client, over the same supervisor and engine as
//! [`DeviceClient`].

use azure_iot_core::Message;
use azure_iot_core::connection_string::DeviceConnectionString;
use azure_iot_core::method::{MethodRequest, MethodResponse};
use azure_iot_protocol::Identity;
use serde_json::Value;
use tokio::sync::watch;

use crate::auth::X509Certificate;
use crate::client::{ConnectionState, DesiredPatch, DeviceClient, DeviceTwin, Incoming};
use crate::error::{Error, ErrorKind, Result};
use crate::options::ClientOptions;

/// A connected module client: telemetry and output messages, the module twin and direct
/// methods. Cheap to clone, like [`DeviceClient`], with the same reconnect, renewal and
/// timeout behaviour.
///
/// Modules do not receive cloud-to-device messages. Messages routed to a module's inputs
/// (IoT Edge) are not supported yet.
#[derive(Clone, Debug)]
pub struct ModuleClient {
    inner: DeviceClient,
}

impl ModuleClient {
    /// Connects with a module connection string
    /// (`HostName=…;DeviceId=…;ModuleId=…;SharedAccessKey=…` or `SharedAccessSignature=…`).
    pub async fn from_connection_string(
        connection_string: &str,
        options: ClientOptions,
    ) -> Result<Self> {
        let has_module = DeviceConnectionString::parse(connection_string)
            .map(|cs| cs.module_id().is_some())
            .unwrap_or(true); // a parse error is reported by the device client below
        if !has_module {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the connection string has no ModuleId: use DeviceClient for a device",
            ));
        }
        let inner = DeviceClient::from_connection_string(connection_string, options).await?;
        Ok(Self { inner })
    }

    /// Connects as module `module_id` of `device_id` with an X.509 certificate.
    pub async fn from_x509(
        host_name: &str,
        device_id: &str,
        module_id: &str,
        certificate: &X509Certificate,
        options: ClientOptions,
    ) -> Result<Self> {
        let inner =
            DeviceClient::from_x509(host_name, device_id, Some(module_id), certificate, options)
                .await?;
        Ok(Self { inner })
    }

    /// The device and module this client is.
    pub fn identity(&self) -> &Identity {
        self.inner.identity()
    }

    /// Sends a telemetry message; returns once the hub acknowledged it.
    pub async fn send_event(&self, message: Message) -> Result<()> {
        self.inner.send_event(message).await
    }

    /// Sends `message` on output `output_name` (for IoT Edge routes); returns once the hub
    /// acknowledged it.
    pub async fn send_output(&self, output_name: &str, message: Message) -> Result<()> {
        if output_name.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "an output name must not be empty",
            ));
        }
        let message = message.into_builder().output_name(output_name).build()?;
        self.inner.send_event(message).await
    }

    /// The module twin.
    pub async fn get_twin(&self) -> Result<DeviceTwin> {
        self.inner.get_twin().await
    }

    /// Patches the module twin's reported properties; returns the new version.
    pub async fn update_reported_properties(&self, patch: &Value) -> Result<i64> {
        self.inner.update_reported_properties(patch).await
    }

    /// Desired-property patches of the module twin (see
    /// [`DeviceClient::desired_property_patches`]).
    pub async fn desired_property_patches(&self) -> Result<Incoming<DesiredPatch>> {
        self.inner.desired_property_patches().await
    }

    /// Direct method calls to this module.
    pub async fn method_requests(&self) -> Result<Incoming<MethodRequest>> {
        self.inner.method_requests().await
    }

    /// Answers a direct method call.
    pub async fn respond_to_method(&self, response: MethodResponse) -> Result<()> {
        self.inner.respond_to_method(response).await
    }

    /// The connection state now.
    pub fn connection_state(&self) -> ConnectionState {
        self.inner.connection_state()
    }

    /// A receiver that sees every change of the connection state.
    pub fn watch_connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.watch_connection_state()
    }

    /// Disconnects and ends every stream.
    pub async fn close(&self) {
        self.inner.close().await;
    }
}
