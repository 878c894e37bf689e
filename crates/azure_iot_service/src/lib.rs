//! Azure IoT Hub service client: the back end's half of IoT Hub.
//!
//! ```no_run
//! # async fn run() -> Result<(), azure_iot_service::Error> {
//! use azure_iot_service::{CloudToDeviceMessage, Device, FeedbackMode, ServiceClient, ServiceClientOptions, TwinPatch};
//! use azure_iot_core::method::DirectMethodRequest;
//! use serde_json::json;
//!
//! let hub = ServiceClient::from_connection_string(
//!     "HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=...",
//!     ServiceClientOptions::default(),
//! )?;
//! let device = hub.create_device(&Device::new("sensor-1")).await?;
//! hub.update_twin("sensor-1", &TwinPatch::new().desired(json!({"interval": 5}))?, Default::default()).await?;
//! let answer = hub
//!     .invoke_device_method("sensor-1", &DirectMethodRequest::new("reboot", json!({})))
//!     .await?;
//! let messaging = hub.messaging().await?;
//! messaging
//!     .send("sensor-1", CloudToDeviceMessage::new("hello").feedback(FeedbackMode::Full))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! * **HTTPS** ([`http`]): one reqwest client on rustls with the ring provider, trusting the
//!   operating system's roots or the CA in [`ServiceClientOptions::trusted_ca_pem`]. Every
//!   request carries a SAS token signed with the shared access policy and cached until 85 % of
//!   its life (`credential.rs`). Error answers in either of the hub's two body formats become an
//!   [`Error`] with an [`ErrorKind`], the HTTP status, the hub's error code and tracking id.
//! * **Retries** use the core crate's [`RetryPolicy`](azure_iot_core::RetryPolicy) (the same
//!   one the device client uses): transient and throttled failures are retried, permanent ones
//!   never. A request that is not safe to repeat (a direct method call, a create, a bulk
//!   operation) is retried only when it provably never reached the hub (connect failure) or
//!   the hub answered 429, so a retry never runs a method twice.
//! * **Bad input** (ids outside the hub's character set, a twin patch that is not an object,
//!   an oversized message, more than 100 bulk entries) fails before anything is sent.
//! * **Configurations** (`configurations.rs`): automatic device management with the models
//!   and rules of `azure_iot_protocol::configuration` (shared with the emulator), checked
//!   before sending; creates are not retried once they reached the hub.
//! * **Import/export jobs** (`export_import.rs`): start, read, list, cancel; the hub runs
//!   them in the background against the caller's blob container (a SAS URI). A create is not
//!   retried once it reached the hub (it would start a second job).
//! * **Query** (`query.rs`) follows `x-ms-continuation` tokens page by page; a [`Query`] is
//!   read by page, as a `Stream` of items, or whole.
//! * **Jobs v2** (`jobs.rs`): twin updates and direct methods scheduled over a query
//!   condition, get / cancel / query of jobs and `devices.jobs` rows, with the bodies of
//!   `azure_iot_protocol::jobs` (the emulator's own); the jobs query reads `GET` pages through
//!   the same [`Query`], as arrays or `QueryResult` objects.
//! * **AMQP** (`messaging/`): cloud-to-device sends and the feedback receiver share one
//!   fe2o3-amqp connection authenticated with CBS put-token and renewed from a background
//!   task (`connection.rs`; fe2o3's CBS helper expects 202, IoT Hub answers 200). Addresses,
//!   put-token and the message mapping are `azure_iot_protocol::amqp`, the code the emulator
//!   serves them with. Concurrent sends that find the connection lost share one reconnect
//!   attempt and its result; `is_connected` never waits for one.
//!
//! * **Telemetry** ([`events`]): an Event Hubs consumer of the hub's built-in
//!   Event Hubs-compatible endpoint — from the hub's connection string (following the
//!   redirect IoT Hub answers with) or the endpoint's own `Endpoint=sb://…` string; partition
//!   and hub properties from `$management`; one or all partitions from any
//!   [`EventPosition`]; typed [`ReceivedEvent`]s with every property and annotation; bounded
//!   credit and buffer; reconnects under the retry policy. On the same fe2o3-amqp and TLS
//!   stack as the rest, not Microsoft's `azure_messaging_eventhubs`
//!   (docs/adr/0021-telemetry-reader-on-fe2o3-amqp.md).
//!
//! * **Shared**: the pipeline ([`http::Pipeline`], [`HttpOptions`]), [`Error`], [`IfMatch`],
//!   [`SharedAccessPolicy`] and [`Query`] serve any service whose SAS audience is its host
//!   name; the provisioning service client (`azure_iot_provisioning_service`) is built on them
//!   (docs/adr/0016-provisioning-service-client-reuses-the-service-pipeline.md).
//!
//! Not built on `azure_core`: see docs/adr/0006-service-client-http-stack.md.

mod client;
mod configurations;
mod credential;
mod error;
pub mod events;
mod export_import;
pub mod http;
mod jobs;
mod messaging;
pub mod models;
mod options;
mod query;

pub use azure_iot_core::method::{DirectMethodRequest, DirectMethodResponse};
pub use azure_iot_core::twin::Twin;
pub use azure_iot_protocol::configuration::{
    Configuration, ConfigurationContent, ConfigurationMetrics, ConfigurationQueriesTestInput,
    ConfigurationQueriesTestResponse,
};
pub use azure_iot_protocol::export_import::ExportImportJob;
pub use azure_iot_protocol::jobs::{
    DeviceJob, DeviceJobError, DeviceJobOutcome, DeviceJobStatistics, DeviceJobStatus, JobRequest,
    JobResponse, JobStatus, JobType,
};
pub use client::{IfMatch, ServiceClient, TwinPatch};
pub use credential::SharedAccessPolicy;
pub use error::{Error, ErrorKind, Result};
pub use events::{
    EventHubConsumer, EventHubConsumerOptions, EventHubProperties, EventPosition, EventStream,
    PartitionProperties, PropertyValue, ReceivedEvent,
};
pub use jobs::JobSchedule;
pub use messaging::{
    CloudToDeviceMessage, FeedbackBatch, FeedbackMode, FeedbackReceiver, FeedbackRecord,
    FeedbackStatus, FileNotification, FileNotificationBatch, FileNotificationReceiver, InboxBatch,
    InboxItem, InboxReceiver, MAX_C2D_BODY, Messaging, SENDER_LINKS,
};
pub use models::{
    AuthenticationMechanism, AuthenticationType, BulkEntry, BulkError, BulkMode, BulkResult,
    Device, DeviceCapabilities, DeviceConnectionState, DeviceStatus, Module, PurgeResult,
    RegistryStatistics, ServiceStatistics, SymmetricKey, X509Thumbprint,
};
pub use options::{API_VERSION, HttpOptions, ServiceClientOptions};
pub use query::Query;

/// The README's examples (the core and protocol tour, the service client), compiled as doc
/// tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
