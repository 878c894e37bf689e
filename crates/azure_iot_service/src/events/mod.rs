//! The telemetry reader: an Event Hubs consumer for the hub's built-in Event
//! Hubs-compatible endpoint (or any event hub), on the workspace's fe2o3-amqp
//! (docs/adr/0021-telemetry-reader-on-fe2o3-amqp.md).
//!
//! ```text
//!   HostName=… ──redirect.rs──▶ Endpoint=sb://…;EntityPath=…   (one SASL PLAIN connection
//!                                      │                         to the hub, answered with
//!                                      ▼                         amqp:link:redirect)
//!   EventHubConsumer ── link.rs: TLS, CBS token for sb://{host}/{hub}, $management ──┐
//!        │ receive_partition / receive_all                                          │
//!        ▼                                                                          ▼
//!   EventStream ◀── bounded channel ◀── one task per partition: receiver with credit,
//!                                       selector filter (position.rs), ReceivedEvent (event.rs)
//! ```
//!
//! What goes on the wire, so that it works unchanged against IoT Hub and Event Hubs:
//!
//! * **Redirect** (`redirect.rs`): TLS to `{hub}:5671`, SASL PLAIN
//!   `{policy}@sas.root.{hub name}` with a 5-minute SAS token for the hub (`sr={hub}`);
//!   a receiver on `amqps://{hub}/messages/events/$management`; the hub's
//!   `amqp:link:redirect` names the namespace host and `…/{event hub}/$management`.
//! * **Authentication** (`link.rs`): no SASL; a CBS put-token (`servicebus.windows.net:sastoken`)
//!   for `sb://{host}/{event hub}`, signed with the policy and renewed at 85 % of its life.
//! * **Properties** (`management.rs`): `READ` requests on `$management` for
//!   `com.microsoft:eventhub` and `com.microsoft:partition`, with `security_token`.
//! * **Receivers**: source `amqps://{host}/{event hub}/ConsumerGroups/{group}/Partitions/{id}`
//!   with the selector filter of the [`EventPosition`]; settle-on-send; `prefetch` credit,
//!   refilled as events are taken; an owner level as `com.microsoft:epoch`.
//!
//! Memory is bounded: per partition at most `prefetch` deliveries wait in the AMQP engine,
//! and the stream holds at most `buffer` events; when the reader is slow, the partition
//! tasks wait and stop granting credit. A broken connection is reopened under the options'
//! retry policy (the core crate's [`RetryPolicy`](azure_iot_core::RetryPolicy)); each
//! partition resumes after the last event handed to the reader, so none is skipped.
//! Errors carry an [`ErrorKind`](crate::ErrorKind) mapped from the AMQP condition
//! (`amqp:not-found` → `NotFound`, `amqp:unauthorized-access` → `Unauthorized`,
//! `com.microsoft:argument-out-of-range` → `BadRequest`, a stolen link → `Closed`) and
//! never a key or token.

mod consumer;
mod event;
mod link;
mod management;
mod position;
mod redirect;

pub use consumer::{
    DEFAULT_CONSUMER_GROUP, EventHubConsumer, EventHubConsumerOptions, EventStream,
};
pub use event::{PropertyValue, ReceivedEvent};
pub use management::{EventHubProperties, PartitionProperties};
pub use position::EventPosition;

/// Names of the annotations an IoT hub's events carry.
pub mod annotations {
    pub use super::event::{
        DEVICE_ID, ENQUEUED_TIME, HUB_ENQUEUED_TIME, MESSAGE_SOURCE, MODULE_ID, OFFSET,
        PARTITION_KEY, SEQUENCE_NUMBER,
    };
}
