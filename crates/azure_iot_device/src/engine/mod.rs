//! The seam between the transport-neutral [supervisor](crate::supervisor) and one
//! transport's connection machinery.
//!
//! An [`Engine`] turns neutral [`Operation`]s into a protocol's traffic and that traffic back
//! into [`EngineEvent`]s. It knows nothing about retry policies, token renewal, callers or
//! streams: the supervisor decides *when* to connect and with which credential, holds the
//! callers, and delivers inbound messages; the engine only moves one connection's bytes.
//!
//! Contract:
//!
//! * [`Engine::connect`] opens a connection authenticated by the given password (a SAS token,
//!   or none for X.509) and resumes the session on it: operations submitted earlier and not
//!   yet answered are sent (again) by the engine, not by the supervisor. It returns once the
//!   hub accepted the connection; nothing is written after that until [`Engine::next`] runs,
//!   so the supervisor can still [`cancel`](Engine::cancel) operations whose caller left.
//! * [`Engine::submit`] takes an operation at any time, connected or not, with the deadline
//!   after which it must never be sent; [`Engine::cancel`] withdraws one.
//! * [`Engine::next`] drives I/O and timers until something happens. It must be cancel-safe
//!   (the supervisor `select!`s on it): all progress lives in the engine, never in the
//!   future. With `reading: false` it stops taking input (TCP back-pressure while the
//!   application's streams are full) but keeps writing and keeps its timers (keep-alive).
//!   While disconnected it only reports operations whose deadline passed.
//!
//! * [`Engine::renew`] puts a fresh token on the live connection where the protocol can
//!   (AMQP's CBS); by default it reconnects (MQTT 3.1.1 can change credentials no other way).
//!
//! The engines:
//!
//! * **MQTT** ([`mqtt`]) owns its socket and pumps it in `next`.
//! * **AMQP** ([`amqp`]) can carry many devices on one connection (a gateway multiplexing
//!   device clients): its engine is a cheap per-device handle on a shared connection
//!   (`crate::amqp`): `connect` takes a seat on a pooled connection, puts this device's CBS
//!   token and starts the device's *unit* (a task owning its session and links); `next`
//!   receives the unit's events over a channel. Nothing in this trait assumes that the
//!   engine owns a socket.
//!
//! * **HTTPS** ([`https`]) has no connection: `connect` only records the credential, each `submit`
//!   becomes one request whose response is the [`EngineEvent::Done`], and C2D messages are
//!   polled (`next` runs the poll timer) and settled by lock token with all three
//!   [`Outcome`]s.
//! * Settlement is an [`Outcome`] because AMQP and HTTPS can complete, abandon and reject,
//!   while MQTT can only complete (its PUBACK): an engine answers what it cannot do with
//!   [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported).

#[cfg(feature = "amqp")]
pub(crate) mod amqp;
#[cfg(feature = "https")]
pub(crate) mod https;
pub(crate) mod mqtt;

use std::future::Future;

use azure_iot_core::Message;
use azure_iot_core::method::{MethodRequest, MethodResponse};
use bytes::Bytes;
use tokio::time::Instant;

use crate::client::{DisconnectReason, TwinAnswer};
use crate::error::Result;

/// An operation's handle, given by the engine.
pub(crate) type OpId = u64;

/// A received cloud-to-device message's handle for settling it, given by the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DeliveryTag(pub(crate) u64);

/// A kind of inbound traffic a client can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Feature {
    /// Cloud-to-device messages.
    CloudToDevice,
    /// Desired-properties patches.
    DesiredPatches,
    /// Direct method calls.
    Methods,
}

/// What the supervisor asks an engine to do.
#[derive(Debug)]
pub(crate) enum Operation {
    /// Telemetry (or module output); answered by [`Reply::Done`] once the hub took it.
    SendEvent(Box<Message>),
    /// Several events sent as one, stored all or none; answered by [`Reply::Done`]. Engines
    /// whose protocol cannot batch answer [`ErrorKind::Unsupported`](crate::ErrorKind).
    SendEventBatch(Vec<Message>),
    /// Read the twin; answered by [`Reply::Twin`].
    TwinGet,
    /// Patch reported properties (a JSON object); answered by [`Reply::Twin`].
    PatchReported(Bytes),
    /// Answer a method call; answered by [`Reply::Done`].
    RespondToMethod(MethodResponse),
    /// Start receiving a feature (kept across reconnects); answered by [`Reply::Done`].
    Subscribe(Feature),
}

/// A successful answer to an [`Operation`].
#[derive(Debug)]
pub(crate) enum Reply {
    /// Done, nothing to return.
    Done,
    /// A twin answer (any status; the caller judges it).
    Twin(TwinAnswer),
}

/// How the application settled a cloud-to-device message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Handled: the hub deletes it.
    Complete,
    /// Not handled now: the hub delivers it again.
    Abandon,
    /// Never to be handled: the hub dead-letters it.
    Reject,
}

/// Something an engine reports.
#[derive(Debug)]
pub(crate) enum EngineEvent {
    /// An operation ended (an error of kind `Timeout` if its deadline passed unsent).
    Done(OpId, Result<Reply>),
    /// A cloud-to-device message, to be settled with its tag.
    CloudToDevice(Box<Message>, DeliveryTag),
    /// A desired-properties patch.
    DesiredPatch {
        /// The desired version after it.
        version: i64,
        /// The patch (JSON text).
        body: Bytes,
    },
    /// A direct method call.
    Method(MethodRequest),
    /// The connection ended; the supervisor decides whether to connect again.
    Lost(DisconnectReason),
}

/// One transport's connection machinery; see the module documentation for the contract.
pub(crate) trait Engine: Send + 'static {
    /// Opens a connection authenticated by `password` and resumes the session on it.
    fn connect(&mut self, password: Option<&str>) -> impl Future<Output = Result<()>> + Send;

    /// Takes an operation; it is never sent once `deadline` has passed.
    fn submit(&mut self, operation: Operation, deadline: Instant) -> OpId;

    /// Withdraws an operation whose caller went away: it is never sent afterwards.
    fn cancel(&mut self, op: OpId);

    /// Settles a cloud-to-device message.
    fn settle(&mut self, tag: DeliveryTag, outcome: Outcome) -> Result<()>;

    /// Drives I/O and timers until something happens (cancel-safe; see the module docs).
    fn next(&mut self, reading: bool) -> impl Future<Output = EngineEvent> + Send;

    /// Ends the connection cleanly, if there is one.
    fn close(&mut self) -> impl Future<Output = ()> + Send;

    /// Replaces the connection's credential with `password` before the old one expires,
    /// without losing or failing an operation. By default it reconnects (operations in
    /// flight are resent by [`connect`](Engine::connect)). `Ok(true)` when the connection was
    /// kept (and so the locks of received messages not settled yet), `Ok(false)` when it was
    /// replaced.
    fn renew(&mut self, password: Option<&str>) -> impl Future<Output = Result<bool>> + Send {
        async move {
            self.close().await;
            self.connect(password).await.map(|()| false)
        }
    }
}
