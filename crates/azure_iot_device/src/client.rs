//! [`DeviceClient`]: the handle users hold, and the commands it sends to the supervisor task
//! that owns the connection ([`crate::supervisor`]).
//!
//! The handle takes a flow-control permit (one of `max_pending_operations`), sends a
//! [`Command`] over a channel and waits for its oneshot; all of it within the one operation
//! timeout, so nothing waits forever. Inbound messages arrive on bounded [`Incoming`]
//! streams; a cloud-to-device message can be settled through [`ReceivedMessage`].

use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use azure_iot_core::Message;
use azure_iot_core::connection_string::DeviceConnectionString;
use azure_iot_core::message::MAX_MESSAGE_SIZE;
use azure_iot_core::method::{MethodRequest, MethodResponse};
use azure_iot_core::sas::{ResourceUri, SharedAccessKey};
use azure_iot_protocol::Identity;
use azure_iot_protocol::mqtt::client as session;
use bytes::Bytes;
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::{Instant, timeout, timeout_at};

use crate::auth::{Credential, TokenProvider, X509Certificate};
use crate::engine::mqtt::MqttEngine;
use crate::engine::{DeliveryTag, Engine, Feature, Operation, Outcome, Reply};
use crate::error::{Error, ErrorKind, Result};
use crate::options::ClientOptions;
use crate::supervisor::{self, Auth};
use crate::transport::{self, Dial};

/// The `DeviceClientType` this client announces.
pub(crate) const CLIENT_TYPE: &str = concat!("azure-iot-rs/", env!("CARGO_PKG_VERSION"));

/// Whether the client is connected, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connected and authenticated.
    Connected,
    /// Not connected.
    Disconnected(DisconnectReason),
}

/// Why a client is disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The network connection was lost or the hub closed it.
    Network,
    /// The hub answered the keep-alive late or not at all.
    KeepAliveTimeout,
    /// The hub sent something that is not the IoT Hub protocol.
    ProtocolError,
    /// [`DeviceClient::close`] was called or every handle was dropped.
    ClosedByUser,
    /// The hub refused the credentials when the client reconnected (final). This is also how
    /// a device that was disabled or deleted meanwhile shows: IoT Hub refuses it with the same
    /// CONNACK code (5, not authorized) as a wrong key, so the client cannot tell them apart.
    Unauthorized,
    /// The hub refused the connection for a reason retrying cannot fix (final).
    Refused,
    /// The retry policy gave up reconnecting (final).
    RetriesExhausted,
    /// The SAS token the client was given has expired and it has no key to sign another
    /// (final; open a new client with a fresh token).
    ExpiredToken,
}

/// A device's twin as the device sees it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeviceTwin {
    /// Desired properties, including `$version`.
    pub desired: Value,
    /// Reported properties, including `$version`.
    pub reported: Value,
}

/// A desired-properties patch pushed by the hub.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DesiredPatch {
    /// The desired-properties version after this patch.
    pub version: i64,
    /// The patch (a JSON object; `null` removes a property).
    pub patch: Value,
}

/// A twin request's answer, as the hub sent it.
#[derive(Debug)]
pub(crate) struct TwinAnswer {
    /// The status (200, 204, 4xx…).
    pub(crate) status: u16,
    /// The new reported version, for a reported-properties patch.
    pub(crate) version: Option<i64>,
    /// The body.
    pub(crate) body: Bytes,
}

/// What a handle asks the supervisor.
pub(crate) enum Command {
    /// An operation with its caller.
    Operation(Request),
    /// Open a stream (and subscribe to it).
    Subscribe {
        /// Where the stream's messages go.
        sink: Sink,
        /// Completed by the hub's answer to the subscription.
        done: oneshot::Sender<Result<()>>,
        /// The caller's deadline.
        deadline: Instant,
        /// The caller's flow-control permit.
        permit: OwnedSemaphorePermit,
    },
    /// Close the client.
    Close(oneshot::Sender<()>),
}

/// An operation and who waits for it.
pub(crate) struct Request {
    /// What to do.
    pub(crate) operation: Operation,
    /// The caller.
    pub(crate) reply: Responder,
    /// The caller's deadline: after it the operation is never sent.
    pub(crate) deadline: Instant,
    /// The caller's flow-control permit, held until the answer.
    pub(crate) permit: OwnedSemaphorePermit,
    /// Names the call on the supervisor's `gone` channel.
    pub(crate) call: u64,
}

/// A caller waiting for an operation's answer.
pub(crate) enum Responder {
    /// An operation that returns nothing.
    Unit(oneshot::Sender<Result<()>>),
    /// A twin request.
    Twin(oneshot::Sender<Result<TwinAnswer>>),
}

impl Responder {
    /// Whether the caller has gone (timed out or dropped its future).
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Self::Unit(tx) => tx.is_closed(),
            Self::Twin(tx) => tx.is_closed(),
        }
    }

    /// Fails the caller with `error`.
    pub(crate) fn fail(self, error: Error) {
        match self {
            Self::Unit(tx) => {
                let _ = tx.send(Err(error));
            }
            Self::Twin(tx) => {
                let _ = tx.send(Err(error));
            }
        }
    }

    /// Gives the caller the engine's answer.
    pub(crate) fn complete(self, result: Result<Reply>) {
        match (self, result) {
            (Self::Unit(tx), Ok(_)) => {
                let _ = tx.send(Ok(()));
            }
            (Self::Twin(tx), Ok(Reply::Twin(answer))) => {
                let _ = tx.send(Ok(answer));
            }
            (Self::Twin(tx), Ok(Reply::Done)) => {
                let _ = tx.send(Err(Error::new(
                    ErrorKind::Protocol,
                    "the twin request was acknowledged without an answer",
                )));
            }
            (responder, Err(e)) => responder.fail(e),
        }
    }
}

/// Where inbound messages of one kind go.
pub(crate) enum Sink {
    /// Cloud-to-device messages.
    CloudToDevice(C2dSink),
    /// Desired-properties patches.
    Desired(mpsc::Sender<DesiredPatch>),
    /// Direct method calls.
    Methods(mpsc::Sender<MethodRequest>),
}

/// A cloud-to-device stream, by how its messages are settled.
pub(crate) enum C2dSink {
    /// Completed as they are handed to the stream.
    Completed(mpsc::Sender<Message>),
    /// Settled by the application through [`ReceivedMessage`].
    Settled(mpsc::Sender<ReceivedMessage>),
}

impl Sink {
    /// The feature the sink needs.
    pub(crate) fn feature(&self) -> Feature {
        match self {
            Self::CloudToDevice(_) => Feature::CloudToDevice,
            Self::Desired(_) => Feature::DesiredPatches,
            Self::Methods(_) => Feature::Methods,
        }
    }
}

/// The application's settlement of a cloud-to-device message.
pub(crate) struct Settlement {
    /// The message.
    pub(crate) tag: DeliveryTag,
    /// How it was settled.
    pub(crate) outcome: Outcome,
    /// Told the result, unless the settlement comes from a drop.
    pub(crate) done: Option<oneshot::Sender<Result<()>>>,
    /// A dropped message's slot among the unsettled ones, given back once the supervisor
    /// has taken the settlement (so settlements queued never outnumber the slots).
    pub(crate) _slot: Option<OwnedSemaphorePermit>,
}

/// A connected device client (a module connection string also works here, but
/// [`ModuleClient`](crate::ModuleClient) says what a module can do).
///
/// Cheap to clone; every clone drives the same connection. The connection closes when
/// [`close`](Self::close) is called or the last clone is dropped.
///
/// When the connection is lost the client reconnects by its retry policy
/// ([`ClientOptions::retry_policy`]): operations issued meanwhile wait (within their timeout),
/// messages the hub had not acknowledged are sent again, subscriptions are renewed, and a
/// desired-properties change made while the device was away is delivered on the
/// desired-patch stream. Refused credentials end the client with
/// [`DisconnectReason::Unauthorized`]. A key-based client renews its SAS token before it
/// expires without failing anything in flight.
#[derive(Clone, Debug)]
pub struct DeviceClient {
    commands: mpsc::Sender<Command>,
    /// One per operation held, `max_pending_operations` in all.
    permits: Arc<Semaphore>,
    /// Where a call whose caller went away says so (see [`CallGuard`]).
    gone: mpsc::Sender<u64>,
    /// Call ids, shared by the clones.
    next_call: Arc<AtomicU64>,
    state: watch::Receiver<ConnectionState>,
    identity: Identity,
    operation_timeout: Duration,
    inbound_capacity: usize,
    max_pending: usize,
    /// File upload over HTTPS (whatever the transport).
    #[cfg(feature = "https")]
    files: Arc<crate::files::FileUploads>,
}

/// The identity `device_id` / `module_id` names, if both are ids IoT Hub accepts.
fn identity_of(device_id: &str, module_id: Option<&str>) -> Result<Identity> {
    let check = |what: &str, id: &str| {
        azure_iot_protocol::identity::check_id(id).map_err(|e| {
            Error::with_source(ErrorKind::InvalidArgument, format!("{what} id: {e}"), e)
        })
    };
    check("device", device_id)?;
    Ok(match module_id {
        Some(module) => {
            check("module", module)?;
            Identity::module(device_id, module)
        }
        None => Identity::device(device_id),
    })
}

impl DeviceClient {
    /// Connects with a device or module connection string
    /// (`HostName=…;DeviceId=…[;ModuleId=…];SharedAccessKey=…` or `SharedAccessSignature=…`;
    /// `GatewayHostName` is dialled instead of `HostName` when present).
    ///
    /// Returns once the hub accepted the connection; a refused key fails here with
    /// [`ErrorKind::Unauthorized`].
    pub async fn from_connection_string(
        connection_string: &str,
        options: ClientOptions,
    ) -> Result<Self> {
        let cs = DeviceConnectionString::parse(connection_string).map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidArgument,
                "the device connection string is invalid",
                e,
            )
        })?;
        let credential = Credential::from_connection_string(&cs)?;
        let identity = match cs.module_id() {
            Some(module) => Identity::module(cs.device_id(), module),
            None => Identity::device(cs.device_id()),
        };
        Self::open(
            cs.host_name(),
            cs.connect_host(),
            identity,
            credential,
            None,
            options,
        )
        .await
    }

    /// Connects as `device_id` (or, with `module_id`, that module) of the hub `host_name`
    /// with its symmetric key (base64), signing a fresh token for every connection.
    pub async fn from_symmetric_key(
        host_name: &str,
        device_id: &str,
        module_id: Option<&str>,
        key_base64: &str,
        options: ClientOptions,
    ) -> Result<Self> {
        let key = SharedAccessKey::from_base64(key_base64).map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidArgument,
                "the symmetric key is not valid base64",
                e,
            )
        })?;
        Self::open(
            host_name,
            host_name,
            identity_of(device_id, module_id)?,
            Credential::Key {
                key,
                key_name: None,
            },
            None,
            options,
        )
        .await
    }

    /// Connects as `device_id` (or, with `module_id`, that module) with SAS tokens the
    /// application supplies: `provider` is asked for one before every connection, including
    /// the renewal at 85 % of the previous token's life, so the client never needs the key.
    pub async fn from_token_provider(
        host_name: &str,
        device_id: &str,
        module_id: Option<&str>,
        provider: impl TokenProvider,
        options: ClientOptions,
    ) -> Result<Self> {
        Self::open(
            host_name,
            host_name,
            identity_of(device_id, module_id)?,
            Credential::Provider(std::sync::Arc::new(provider)),
            None,
            options,
        )
        .await
    }

    /// Connects as `device_id` (or, with `module_id`, that module) authenticated by an X.509
    /// certificate: self-signed and registered by thumbprint, or signed by a CA registered
    /// with the hub (the certificate's common name must be the device id).
    ///
    /// A certificate the hub does not accept fails here with [`ErrorKind::Unauthorized`].
    pub async fn from_x509(
        host_name: &str,
        device_id: &str,
        module_id: Option<&str>,
        certificate: &X509Certificate,
        options: ClientOptions,
    ) -> Result<Self> {
        Self::open(
            host_name,
            host_name,
            identity_of(device_id, module_id)?,
            Credential::X509,
            Some(certificate),
            options,
        )
        .await
    }

    async fn open(
        host_name: &str,
        connect_host: &str,
        identity: Identity,
        credential: Credential,
        certificate: Option<&X509Certificate>,
        options: ClientOptions,
    ) -> Result<Self> {
        let trusted = options.trusted_ca_pem.as_deref();
        let tls = match (certificate, &options.amqp_pool_ref()) {
            // Pooled clients without a certificate share one TLS configuration: the root store
            // (the operating system's bundle, read from disk) is built once per pool.
            (None, Some(pool)) => pool.tls_config(trusted)?,
            _ => transport::tls_config(trusted, certificate)?,
        };
        let client_type = match options.product_info.as_deref() {
            Some(info) => format!("{CLIENT_TYPE} {info}"),
            None => CLIENT_TYPE.to_owned(),
        };
        let connect_host = options.gateway_host_name.as_deref().unwrap_or(connect_host);
        let dial = Dial {
            tls,
            host: connect_host.to_owned(),
            port: options.effective_port(),
            transport: options.transport,
            proxy: options.proxy.clone(),
        };
        let resource = match identity.module_id() {
            Some(module) => ResourceUri::module(host_name, identity.device_id(), module),
            None => ResourceUri::device(host_name, identity.device_id()),
        };
        let auth = Arc::new(Auth {
            credential,
            resource,
            token_ttl: options.token_ttl,
            timeout: options.operation_timeout,
        });
        // A shared HTTP client carries SAS-authenticated devices only: a certificate belongs
        // to the TLS connection.
        #[cfg(feature = "https")]
        let shared_http = options
            .http_client
            .clone()
            .filter(|_| certificate.is_none());
        #[cfg(feature = "https")]
        let files = {
            let files = crate::files::FileUploads::new(
                auth.clone(),
                identity.clone(),
                dial.clone(),
                options.effective_https_port(),
                options.operation_timeout,
            );
            Arc::new(match shared_http.clone() {
                Some(client) => files.with_http_client(client),
                None => files,
            })
        };
        #[cfg(feature = "amqp")]
        if options.transport.is_amqp() {
            let pool = options
                .amqp_pool
                .clone()
                .unwrap_or_else(crate::amqp::AmqpPool::private);
            let mut engine = crate::engine::amqp::AmqpEngine::new(
                pool,
                dial,
                identity.clone(),
                host_name.to_owned(),
                client_type,
            );
            let renew_at = auth.connect(&mut engine).await?;
            return Ok(Self::start(
                engine,
                auth,
                renew_at,
                identity,
                &options,
                #[cfg(feature = "https")]
                files,
            ));
        }
        #[cfg(feature = "https")]
        if options.transport == crate::Transport::Https {
            let mut engine = crate::engine::https::HttpsEngine::new(
                &dial,
                &identity,
                options.operation_timeout,
                options.https_poll_interval,
                shared_http,
            )?;
            let renew_at = auth.connect(&mut engine).await?;
            return Ok(Self::start(
                engine,
                auth,
                renew_at,
                identity,
                &options,
                #[cfg(feature = "https")]
                files,
            ));
        }
        let max_pending = options.max_pending_operations.max(1);
        let session = session::Client::new(session::Config {
            identity: identity.clone(),
            host: host_name.to_owned(),
            model_id: options.model_id.clone(),
            client_type,
            keep_alive: Duration::from_secs(options.keep_alive.as_secs().min(u64::from(u16::MAX))),
            max_in_flight: max_pending.min(session::MAX_IN_FLIGHT_LIMIT),
        });
        let mut engine = MqttEngine::new(session, dial);
        let renew_at = auth.connect(&mut engine).await?;
        Ok(Self::start(
            engine,
            auth,
            renew_at,
            identity,
            &options,
            #[cfg(feature = "https")]
            files,
        ))
    }

    /// Starts the supervisor over `engine`, which `auth` has just connected.
    pub(crate) fn start<E: Engine>(
        engine: E,
        auth: Arc<Auth>,
        renew_at: Option<Instant>,
        identity: Identity,
        options: &ClientOptions,
        #[cfg(feature = "https")] files: Arc<crate::files::FileUploads>,
    ) -> Self {
        let max_pending = options.max_pending_operations.max(1);
        // Room for every permitted operation and a close.
        let (commands_tx, commands_rx) = mpsc::channel(max_pending + 1);
        let permits = Arc::new(Semaphore::new(max_pending));
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connected);
        // An armed call guard holds its operation's permit (in the supervisor's waiter) until
        // the supervisor takes its message, so at most `max_pending` can be queued.
        let (gone_tx, gone_rx) = mpsc::channel(max_pending);
        supervisor::spawn(supervisor::Parts {
            engine,
            auth,
            retry: options.retry_policy.clone(),
            commands: commands_rx,
            permits: permits.clone(),
            gone: gone_rx,
            state: state_tx,
            renew_at,
        });
        tracing::debug!(client_id = %identity.client_id(), "connected");
        Self {
            commands: commands_tx,
            permits,
            gone: gone_tx,
            next_call: Arc::new(AtomicU64::new(0)),
            state: state_rx,
            identity,
            operation_timeout: options.operation_timeout,
            inbound_capacity: options.inbound_capacity.max(1),
            max_pending,
            #[cfg(feature = "https")]
            files,
        }
    }

    /// How many operations the client holds now (waiting for a permit is not holding):
    /// never more than [`ClientOptions::max_pending_operations`].
    #[doc(hidden)]
    pub fn pending_operations(&self) -> usize {
        self.max_pending
            .saturating_sub(self.permits.available_permits())
    }

    /// The device (and module) this client is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The connection state now; [`watch_connection_state`](Self::watch_connection_state)
    /// to follow changes.
    pub fn connection_state(&self) -> ConnectionState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of the connection state.
    pub fn watch_connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Sends telemetry (or, for a module with an output name set, a module output message);
    /// returns once the hub acknowledged it (PUBACK).
    ///
    /// A message larger than IoT Hub's 256 KiB limit is refused here, before anything is sent.
    pub async fn send_event(&self, message: Message) -> Result<()> {
        if message.size() > MAX_MESSAGE_SIZE {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "message is {} bytes; IoT Hub accepts at most {MAX_MESSAGE_SIZE}",
                    message.size()
                ),
            ));
        }
        self.call(
            "send_event",
            Responder::Unit,
            Operation::SendEvent(Box::new(message)),
        )
        .await
    }

    /// Sends several telemetry messages as one batch (one AMQP transfer): the hub stores all
    /// of them or none; returns once the hub acknowledged the batch.
    ///
    /// IoT Hub takes batches over AMQP (and HTTPS), not MQTT: over MQTT this fails with
    /// [`ErrorKind::Unsupported`]. An empty batch, one of more than
    /// [`MAX_BATCH_MESSAGES`](azure_iot_protocol::amqp::batch::MAX_BATCH_MESSAGES) messages,
    /// or one larger than 256 KiB in all is refused here, before anything is sent.
    pub async fn send_event_batch(&self, messages: Vec<Message>) -> Result<()> {
        let max = azure_iot_protocol::amqp::batch::MAX_BATCH_MESSAGES;
        if messages.is_empty() || messages.len() > max {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("a batch holds 1 to {max} messages, not {}", messages.len()),
            ));
        }
        let size: usize = messages.iter().map(Message::size).sum();
        if size > MAX_MESSAGE_SIZE {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("the batch is {size} bytes; IoT Hub accepts at most {MAX_MESSAGE_SIZE}"),
            ));
        }
        self.call(
            "send_event_batch",
            Responder::Unit,
            Operation::SendEventBatch(messages),
        )
        .await
    }

    /// The device's twin (desired and reported properties).
    pub async fn get_twin(&self) -> Result<DeviceTwin> {
        let answer = self
            .call("get_twin", Responder::Twin, Operation::TwinGet)
            .await?;
        ok_status("twin GET", &answer)?;
        let mut doc: Value = serde_json::from_slice(&answer.body).map_err(|e| {
            Error::with_source(ErrorKind::Protocol, "the twin the hub sent is not JSON", e)
        })?;
        Ok(DeviceTwin {
            desired: doc.get_mut("desired").map(Value::take).unwrap_or_default(),
            reported: doc.get_mut("reported").map(Value::take).unwrap_or_default(),
        })
    }

    /// Patches reported properties with `patch` (a JSON object; `null` removes a property);
    /// returns the new reported-properties version.
    pub async fn update_reported_properties(&self, patch: &Value) -> Result<i64> {
        if !patch.is_object() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a reported-properties patch must be a JSON object",
            ));
        }
        let body = Bytes::from(patch.to_string());
        let answer = self
            .call(
                "update_reported_properties",
                Responder::Twin,
                Operation::PatchReported(body),
            )
            .await?;
        ok_status("reported-properties PATCH", &answer)?;
        answer.version.ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                "the hub accepted the reported patch without saying the new version",
            )
        })
    }

    /// Starts receiving cloud-to-device messages (subscribes on first call). A later call
    /// replaces the stream; the earlier one ends.
    ///
    /// Each message is completed as it enters the stream (the hub then deletes it), so a
    /// message held in the stream when the process dies is lost; use
    /// [`cloud_to_device_messages_with_settlement`](Self::cloud_to_device_messages_with_settlement)
    /// to complete each one after handling it. The stream holds at most
    /// [`ClientOptions::inbound_capacity`] messages; while it is full the client reads
    /// nothing more from the hub.
    pub async fn cloud_to_device_messages(&self) -> Result<Incoming<Message>> {
        self.no_c2d_for_modules()?;
        let (tx, rx) = mpsc::channel(self.inbound_capacity);
        self.subscribe(Sink::CloudToDevice(C2dSink::Completed(tx)))
            .await?;
        Ok(Incoming(rx))
    }

    /// Starts receiving cloud-to-device messages that the application settles itself:
    /// [`ReceivedMessage::complete`] after handling one (dropping it completes it too),
    /// [`ReceivedMessage::abandon`] to have it delivered again, [`ReceivedMessage::reject`]
    /// to dead-letter it. A later call replaces the stream, like
    /// [`cloud_to_device_messages`](Self::cloud_to_device_messages).
    ///
    /// Over MQTT completion is the PUBACK, sent in arrival order (a message completed before
    /// an earlier one is acknowledged after it), and IoT Hub allows nothing else: abandon and
    /// reject fail with [`ErrorKind::Unsupported`] and leave the message unsettled. A message
    /// not completed when the connection drops is delivered again after the reconnect.
    ///
    /// Over AMQP all three exist (dispositions accepted, released, rejected). A message
    /// settled after the connection that delivered it was lost fails with
    /// [`ErrorKind::Disconnected`]: the hub delivers it again.
    pub async fn cloud_to_device_messages_with_settlement(
        &self,
    ) -> Result<Incoming<ReceivedMessage>> {
        self.no_c2d_for_modules()?;
        let (tx, rx) = mpsc::channel(self.inbound_capacity);
        self.subscribe(Sink::CloudToDevice(C2dSink::Settled(tx)))
            .await?;
        Ok(Incoming(rx))
    }

    fn no_c2d_for_modules(&self) -> Result<()> {
        if self.identity.is_module() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "modules do not receive cloud-to-device messages",
            ));
        }
        Ok(())
    }

    /// Starts receiving desired-property patches (subscribes on first call). The stream
    /// holds at most [`ClientOptions::inbound_capacity`] patches.
    pub async fn desired_property_patches(&self) -> Result<Incoming<DesiredPatch>> {
        let (tx, rx) = mpsc::channel(self.inbound_capacity);
        self.subscribe(Sink::Desired(tx)).await?;
        Ok(Incoming(rx))
    }

    /// Starts receiving direct method calls (subscribes on first call); answer each with
    /// [`respond_to_method`](Self::respond_to_method). The stream holds at most
    /// [`ClientOptions::inbound_capacity`] calls.
    pub async fn method_requests(&self) -> Result<Incoming<MethodRequest>> {
        let (tx, rx) = mpsc::channel(self.inbound_capacity);
        self.subscribe(Sink::Methods(tx)).await?;
        Ok(Incoming(rx))
    }

    /// Answers a direct method call.
    pub async fn respond_to_method(&self, response: MethodResponse) -> Result<()> {
        self.call(
            "respond_to_method",
            Responder::Unit,
            Operation::RespondToMethod(response),
        )
        .await
    }

    /// Asks the hub where to upload a file named `blob_name`: a SAS URI for the blob
    /// `{deviceId}/{blob_name}` in the storage container linked to the hub, and the correlation
    /// id to report the outcome with ([`notify_blob_upload_status`](Self::notify_blob_upload_status)).
    /// Over HTTPS, whatever the client's transport (the hub offers file upload only there);
    /// devices only (a module gets [`ErrorKind::Unsupported`]).
    ///
    /// Most applications call [`upload_file`](Self::upload_file), which does all three steps.
    #[cfg(feature = "https")]
    pub async fn get_storage_info_for_blob(
        &self,
        blob_name: &str,
    ) -> Result<crate::files::BlobUploadInfo> {
        self.files.storage_info(blob_name).await
    }

    /// Tells the hub how the upload `correlation_id` went; on success (and when the hub's
    /// file-upload notifications are on) the back end receives a file-upload notification.
    /// `status_code` and `status_description` are free for the application (the storage
    /// request's HTTP status is customary).
    #[cfg(feature = "https")]
    pub async fn notify_blob_upload_status(
        &self,
        correlation_id: &str,
        is_success: bool,
        status_code: i32,
        status_description: &str,
    ) -> Result<()> {
        self.files
            .notify(correlation_id, is_success, status_code, status_description)
            .await
    }

    /// Uploads `data` as the blob `{deviceId}/{blob_name}`: asks the hub where, writes the
    /// block blob to storage (one Put Blob up to 4 MiB, blocks above), and reports the outcome
    /// to the hub — a failed write is reported as failed before its error is returned. For
    /// files larger than memory, [`upload_file_from`](Self::upload_file_from).
    #[cfg(feature = "https")]
    pub async fn upload_file(&self, blob_name: &str, data: impl Into<bytes::Bytes>) -> Result<()> {
        let data = data.into();
        let info = self.files.storage_info(blob_name).await?;
        let written = if data.len() <= crate::files::BLOCK_SIZE {
            self.files.put_blob(&info, data).await
        } else {
            self.files
                .put_blocks(&info, std::io::Cursor::new(data), &mut |_| {})
                .await
                .map(drop)
        };
        self.report_upload(&info, written).await
    }

    /// Uploads what `reader` yields (a file, a socket, a generator) as the blob
    /// `{deviceId}/{blob_name}`, in blocks of 4 MiB with at most four on their way at once —
    /// at most 16 MiB in memory whatever the size — each retried after a network failure
    /// (the upload resumes where it stopped, within the SAS lifetime); then reports the
    /// outcome to the hub, failed or not. Returns the blob's size.
    #[cfg(feature = "https")]
    pub async fn upload_file_from(
        &self,
        blob_name: &str,
        reader: impl tokio::io::AsyncRead + Unpin + Send,
    ) -> Result<u64> {
        self.upload_file_from_with_progress(blob_name, reader, |_| {})
            .await
    }

    /// [`upload_file_from`](Self::upload_file_from), calling `progress` with the bytes stored
    /// so far after each block.
    #[cfg(feature = "https")]
    pub async fn upload_file_from_with_progress(
        &self,
        blob_name: &str,
        reader: impl tokio::io::AsyncRead + Unpin + Send,
        mut progress: impl FnMut(u64) + Send,
    ) -> Result<u64> {
        let info = self.files.storage_info(blob_name).await?;
        let written = self.files.put_blocks(&info, reader, &mut progress).await;
        let size = written.as_ref().copied().unwrap_or_default();
        self.report_upload(&info, written.map(drop)).await?;
        Ok(size)
    }

    /// The middle step of an upload for applications that ask for the SAS
    /// ([`get_storage_info_for_blob`](Self::get_storage_info_for_blob)) and report the outcome
    /// ([`notify_blob_upload_status`](Self::notify_blob_upload_status)) themselves: writes what
    /// `reader` yields to `info`'s blob as [`upload_file_from`](Self::upload_file_from) does,
    /// and reports nothing. Returns the blob's size.
    #[cfg(feature = "https")]
    pub async fn upload_to_blob(
        &self,
        info: &crate::files::BlobUploadInfo,
        reader: impl tokio::io::AsyncRead + Unpin + Send,
        mut progress: impl FnMut(u64) + Send,
    ) -> Result<u64> {
        self.files.put_blocks(info, reader, &mut progress).await
    }

    /// Tells the hub how the upload of `info` went; returns the upload's own error if it
    /// failed (the report of a failure is best effort).
    #[cfg(feature = "https")]
    async fn report_upload(
        &self,
        info: &crate::files::BlobUploadInfo,
        written: Result<()>,
    ) -> Result<()> {
        match written {
            Ok(()) => {
                self.files
                    .notify(&info.correlation_id, true, 201, "uploaded")
                    .await
            }
            Err(e) => {
                let status = match e.kind() {
                    ErrorKind::Status(code) => i32::from(code),
                    _ => -1,
                };
                let _ = self
                    .files
                    .notify(&info.correlation_id, false, status, &e.to_string())
                    .await;
                Err(e)
            }
        }
    }

    /// Disconnects (MQTT DISCONNECT; over AMQP the device's links and session end, and the
    /// connection closes if no other device of its pool is on it) and ends every stream. Operations still waiting fail
    /// with [`ErrorKind::Closed`].
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).await.is_ok() {
            let _ = timeout(self.operation_timeout, rx).await;
        }
    }

    /// Takes a permit, queues `operation` and waits for its answer, all within the
    /// operation timeout. If this future is dropped or times out after the operation was
    /// queued, a [`CallGuard`] tells the supervisor, which withdraws it at once.
    async fn call<T>(
        &self,
        what: &'static str,
        responder: impl FnOnce(oneshot::Sender<Result<T>>) -> Responder,
        operation: Operation,
    ) -> Result<T> {
        let call = self.next_call.fetch_add(1, Ordering::Relaxed);
        let mut guard = CallGuard { call, gone: None };
        let result = self
            .command(what, |tx, deadline, permit| {
                guard.gone = Some(self.gone.clone());
                Command::Operation(Request {
                    operation,
                    reply: responder(tx),
                    deadline,
                    permit,
                    call,
                })
            })
            .await;
        if !matches!(&result, Err(e) if e.kind() == ErrorKind::Timeout) {
            guard.gone = None; // answered: nothing to withdraw
        }
        result
    }

    async fn subscribe(&self, sink: Sink) -> Result<()> {
        self.command("subscribe", |done, deadline, permit| Command::Subscribe {
            sink,
            done,
            deadline,
            permit,
        })
        .await
    }

    /// Waits for a flow-control permit (as rumqttc's in-flight guard makes a publish wait),
    /// queues the command and waits for its answer, all by one deadline. A caller that gives
    /// up (or drops this future) leaves an operation the supervisor never sends.
    async fn command<T>(
        &self,
        what: &'static str,
        command: impl FnOnce(oneshot::Sender<Result<T>>, Instant, OwnedSemaphorePermit) -> Command,
    ) -> Result<T> {
        let deadline = Instant::now() + self.operation_timeout;
        let (tx, rx) = oneshot::channel();
        let work = async {
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| self.gone())?;
            self.commands
                .send(command(tx, deadline, permit))
                .await
                .map_err(|_| self.gone())?;
            rx.await.map_err(|_| self.gone())?
        };
        timeout_at(deadline, work).await.map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "{what} did not finish within the operation timeout ({:?})",
                    self.operation_timeout
                ),
            )
        })?
    }

    fn gone(&self) -> Error {
        match &*self.state.borrow() {
            ConnectionState::Disconnected(DisconnectReason::ClosedByUser) => {
                Error::new(ErrorKind::Closed, "the client was closed")
            }
            ConnectionState::Disconnected(DisconnectReason::Unauthorized) => Error::new(
                ErrorKind::Unauthorized,
                "the hub refused the credentials when the client reconnected",
            ),
            ConnectionState::Disconnected(reason) => Error::new(
                ErrorKind::Disconnected,
                format!("the connection to the hub was lost ({reason:?})"),
            ),
            ConnectionState::Connected => Error::new(
                ErrorKind::Disconnected,
                "the connection to the hub was lost",
            ),
        }
    }
}

fn ok_status(what: &str, answer: &TwinAnswer) -> Result<()> {
    if (200..300).contains(&answer.status) {
        return Ok(());
    }
    let detail = String::from_utf8_lossy(&answer.body);
    Err(Error::new(
        ErrorKind::Status(answer.status),
        format!(
            "the hub answered the {what} with {}: {detail}",
            answer.status
        ),
    ))
}

/// Tells the supervisor, when dropped armed, that the caller of `call` went away (its future
/// was dropped, or it timed out), so that the operation is withdrawn at once.
struct CallGuard {
    call: u64,
    /// `Some` once the command is built (armed); `None` once answered.
    gone: Option<mpsc::Sender<u64>>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(gone) = self.gone.take() {
            // Never full (see `gone`'s capacity); if it were, the supervisor's once-a-second
            // sweep finds the closed reply and withdraws the operation all the same.
            let _ = gone.try_send(self.call);
        }
    }
}

/// A stream of inbound messages of one kind. It ends when the client closes or the
/// connection is lost for good. It holds a bounded number of messages
/// ([`ClientOptions::inbound_capacity`]); while it is full the client stops reading from the
/// hub, so take from it promptly.
#[derive(Debug)]
pub struct Incoming<T>(mpsc::Receiver<T>);

impl<T> Incoming<T> {
    /// The next item, or `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<T> {
        self.0.recv().await
    }

    /// How many items wait in the stream now (at most the stream's capacity).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no item waits in the stream now.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> Stream for Incoming<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// A cloud-to-device message the application settles (from
/// [`DeviceClient::cloud_to_device_messages_with_settlement`]). It dereferences to the
/// [`Message`].
///
/// Settle it with [`complete`](Self::complete), [`abandon`](Self::abandon) or
/// [`reject`](Self::reject); dropping it unsettled completes it (the one outcome every
/// transport has). Over MQTT only completion exists: abandon and reject fail with
/// [`ErrorKind::Unsupported`] and the message stays unsettled.
pub struct ReceivedMessage {
    message: Message,
    tag: DeliveryTag,
    /// `None` once settled.
    settler: Option<mpsc::Sender<Settlement>>,
    /// This message's slot among the unsettled ones (see `supervisor::MAX_UNSETTLED`).
    slot: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for ReceivedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedMessage")
            .field("message", &self.message)
            .field("settled", &self.settler.is_none())
            .finish()
    }
}

impl ReceivedMessage {
    pub(crate) fn new(
        message: Message,
        tag: DeliveryTag,
        settler: mpsc::Sender<Settlement>,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            message,
            tag,
            settler: Some(settler),
            slot: Some(slot),
        }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Completes the message: the hub deletes it. Over MQTT this is its PUBACK, sent once
    /// every earlier message has been completed.
    pub async fn complete(mut self) -> Result<()> {
        self.settle(Outcome::Complete).await
    }

    /// Abandons the message: the hub delivers it again later. Not possible over MQTT
    /// ([`ErrorKind::Unsupported`]; the message stays unsettled).
    pub async fn abandon(&mut self) -> Result<()> {
        self.settle(Outcome::Abandon).await
    }

    /// Rejects the message: the hub dead-letters it and never delivers it again. Not
    /// possible over MQTT ([`ErrorKind::Unsupported`]; the message stays unsettled).
    pub async fn reject(&mut self) -> Result<()> {
        self.settle(Outcome::Reject).await
    }

    async fn settle(&mut self, outcome: Outcome) -> Result<()> {
        let closed = || Error::new(ErrorKind::Closed, "the client was closed");
        let Some(settler) = &self.settler else {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the message was settled already",
            ));
        };
        let (done, answer) = oneshot::channel();
        settler
            .send(Settlement {
                tag: self.tag,
                outcome,
                done: Some(done),
                _slot: None,
            })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())??;
        self.settler = None;
        self.slot = None;
        Ok(())
    }
}

impl Deref for ReceivedMessage {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.message
    }
}

impl Drop for ReceivedMessage {
    fn drop(&mut self) {
        if let Some(settler) = self.settler.take() {
            // Never full: every queued settlement holds a distinct slot, and the channel has
            // room for all of them. If it were, the hub would deliver the message again.
            let _ = settler.try_send(Settlement {
                tag: self.tag,
                outcome: Outcome::Complete,
                done: None,
                _slot: self.slot.take(),
            });
        }
    }
}
