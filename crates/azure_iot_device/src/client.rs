//! [`DeviceClient`]: the handle users hold, and the driver task that owns the connection.
//!
//! The handle sends [`Command`]s over a bounded channel; the driver (spawned by
//! [`DeviceClient::open`]) writes packets, reads the hub's answers and completes each caller's
//! oneshot. Every call is bounded by the one operation timeout, so nothing waits forever.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use azure_iot_core::Message;
use azure_iot_core::connection_string::DeviceConnectionString;
use azure_iot_core::message::MAX_MESSAGE_SIZE;
use azure_iot_core::method::{MethodRequest, MethodResponse};
use azure_iot_core::retry::{ErrorClass, RetryAttempt, RetryPolicy, SharedRetryPolicy};
use azure_iot_core::sas::ResourceUri;
use azure_iot_protocol::Identity;
use azure_iot_protocol::mqtt::codec::{
    MAX_PACKET_BYTES, Packet, Publish, read_packet, write_packet,
};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_rustls::client::TlsStream;

use crate::auth::Credential;
use crate::error::{Error, ErrorKind, Result};
use crate::options::ClientOptions;
use crate::session::{Feature, Inbound, Session};
use crate::transport;

type Stream_ = TlsStream<TcpStream>;

/// How many commands may wait for the driver before callers wait for room.
const COMMAND_QUEUE: usize = 256;

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
    /// The hub sent something that is not IoT Hub MQTT.
    ProtocolError,
    /// [`DeviceClient::close`] was called or every handle was dropped.
    ClosedByUser,
    /// The hub refused the credentials when the client reconnected (final).
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

struct TwinAnswer {
    status: u16,
    version: Option<i64>,
    body: Bytes,
}

enum Command {
    /// Boxed: a message with its system properties is large next to the other commands.
    SendEvent(Box<Message>, oneshot::Sender<Result<()>>),
    TwinGet(oneshot::Sender<Result<TwinAnswer>>),
    PatchReported(Bytes, oneshot::Sender<Result<TwinAnswer>>),
    RespondToMethod(MethodResponse, oneshot::Sender<Result<()>>),
    Subscribe(Sink, oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<()>),
}

/// Where inbound messages of one kind go.
enum Sink {
    CloudToDevice(mpsc::UnboundedSender<Message>),
    Desired(mpsc::UnboundedSender<DesiredPatch>),
    Methods(mpsc::UnboundedSender<MethodRequest>),
}

impl Sink {
    fn feature(&self) -> Feature {
        match self {
            Self::CloudToDevice(_) => Feature::CloudToDevice,
            Self::Desired(_) => Feature::DesiredPatches,
            Self::Methods(_) => Feature::Methods,
        }
    }
}

/// A connected device (or, from a connection string with `ModuleId`, module) client.
///
/// Cheap to clone; every clone drives the same connection. The connection closes when
/// [`close`](Self::close) is called or the last clone is dropped.
///
/// When the connection is lost the client reconnects by its retry policy
/// ([`ClientOptions::retry_policy`]): operations issued meanwhile wait (within their timeout),
/// messages the hub had not acknowledged are sent again, subscriptions are renewed, and a
/// desired-properties change made while the device was away is delivered on the
/// desired-patch stream. Refused credentials end the client with
/// [`DisconnectReason::Unauthorized`]. SAS renewal, X.509 and the WebSocket transport are not
/// implemented yet.
#[derive(Clone, Debug)]
pub struct DeviceClient {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<ConnectionState>,
    identity: Identity,
    operation_timeout: Duration,
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
            options,
        )
        .await
    }

    async fn open(
        host_name: &str,
        connect_host: &str,
        identity: Identity,
        credential: Credential,
        options: ClientOptions,
    ) -> Result<Self> {
        let tls = transport::tls_config(options.trusted_ca_pem.as_deref())?;
        let session = Session::new(
            identity.clone(),
            host_name,
            options.model_id.clone(),
            options.product_info.as_deref(),
        );
        let resource = match identity.module_id() {
            Some(module) => ResourceUri::module(host_name, identity.device_id(), module),
            None => ResourceUri::device(host_name, identity.device_id()),
        };
        let keep_alive_secs = u16::try_from(options.keep_alive.as_secs()).unwrap_or(u16::MAX);
        let connector = Connector {
            tls,
            host: connect_host.to_owned(),
            port: options.port,
            credential,
            resource,
            token_ttl: options.token_ttl,
            keep_alive_secs,
            timeout: options.operation_timeout,
        };
        let (stream, renew_at) = connector.connect(&session).await?;
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connected);
        let (reader, writer) = tokio::io::split(stream);
        let driver = Driver {
            session,
            connector,
            retry: options.retry_policy.clone(),
            commands: commands_rx,
            reader,
            writer,
            read_buf: BytesMut::with_capacity(4096),
            write_buf: BytesMut::with_capacity(4096),
            acks: HashMap::new(),
            next_seq: 0,
            twin: HashMap::new(),
            c2d: None,
            desired: None,
            desired_version: None,
            methods: None,
            state: state_tx,
            keep_alive: Duration::from_secs(u64::from(keep_alive_secs)),
            last_sent: Instant::now(),
            ping_sent: None,
            renew_at,
        };
        tracing::debug!(client_id = %identity.client_id(), "connected");
        tokio::spawn(driver.run());
        Ok(Self {
            commands: commands_tx,
            state: state_rx,
            identity,
            operation_timeout: options.operation_timeout,
        })
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
        self.call("send_event", |tx| Command::SendEvent(Box::new(message), tx))
            .await
    }

    /// The device's twin (desired and reported properties).
    pub async fn get_twin(&self) -> Result<DeviceTwin> {
        let answer = self.call("get_twin", Command::TwinGet).await?;
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
            .call("update_reported_properties", |tx| {
                Command::PatchReported(body, tx)
            })
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
    /// The hub considers a message delivered once the client holds it: drain the stream.
    pub async fn cloud_to_device_messages(&self) -> Result<Incoming<Message>> {
        if self.identity.is_module() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "modules do not receive cloud-to-device messages",
            ));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.call("subscribe", |done| {
            Command::Subscribe(Sink::CloudToDevice(tx), done)
        })
        .await?;
        Ok(Incoming(rx))
    }

    /// Starts receiving desired-property patches (subscribes on first call).
    pub async fn desired_property_patches(&self) -> Result<Incoming<DesiredPatch>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.call("subscribe", |done| {
            Command::Subscribe(Sink::Desired(tx), done)
        })
        .await?;
        Ok(Incoming(rx))
    }

    /// Starts receiving direct method calls (subscribes on first call); answer each with
    /// [`respond_to_method`](Self::respond_to_method).
    pub async fn method_requests(&self) -> Result<Incoming<MethodRequest>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.call("subscribe", |done| {
            Command::Subscribe(Sink::Methods(tx), done)
        })
        .await?;
        Ok(Incoming(rx))
    }

    /// Answers a direct method call.
    pub async fn respond_to_method(&self, response: MethodResponse) -> Result<()> {
        self.call("respond_to_method", |tx| {
            Command::RespondToMethod(response, tx)
        })
        .await
    }

    /// Disconnects (MQTT DISCONNECT) and ends every stream. Operations still waiting fail
    /// with [`ErrorKind::Closed`].
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).await.is_ok() {
            let _ = timeout(self.operation_timeout, rx).await;
        }
    }

    /// Queues a command and waits for its answer, all within the operation timeout.
    async fn call<T>(
        &self,
        what: &'static str,
        command: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let work = async {
            self.commands
                .send(command(tx))
                .await
                .map_err(|_| self.gone())?;
            rx.await.map_err(|_| self.gone())?
        };
        timeout(self.operation_timeout, work).await.map_err(|_| {
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

/// A stream of inbound messages of one kind. It ends when the client closes or the
/// connection is lost.
#[derive(Debug)]
pub struct Incoming<T>(mpsc::UnboundedReceiver<T>);

impl<T> Incoming<T> {
    /// The next item, or `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<T> {
        self.0.recv().await
    }
}

impl<T> Stream for Incoming<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// Everything needed to open a connection again: the driver keeps it for reconnecting.
struct Connector {
    tls: std::sync::Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    credential: Credential,
    resource: ResourceUri,
    token_ttl: Duration,
    keep_alive_secs: u16,
    timeout: Duration,
}

impl Connector {
    /// TLS, CONNECT with a freshly signed token, CONNACK, within the operation timeout.
    ///
    /// Also returns when to renew: at 85 % of the signed token's remaining life (its expiry
    /// is rounded down to a whole second, so a short TTL can leave less than it says), so the
    /// renewal completes before the hub closes the connection at expiry. `None` when the
    /// client holds a token it cannot renew.
    async fn connect(&self, session: &Session) -> Result<(Stream_, Option<Instant>)> {
        let (password, expires) = self.credential.password(&self.resource, self.token_ttl);
        let connect = session.connect(&password, self.keep_alive_secs);
        let renew_at = expires.map(|expiry| {
            let left = expiry
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            Instant::now() + left.mul_f64(0.85)
        });
        let stream = timeout(
            self.timeout,
            handshake(self.tls.clone(), &self.host, self.port, connect),
        )
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "connecting to {}:{} took longer than {:?}",
                    self.host, self.port, self.timeout
                ),
            )
        })??;
        Ok((stream, renew_at))
    }
}

/// TLS, CONNECT, CONNACK.
async fn handshake(
    tls: std::sync::Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
    connect: Packet,
) -> Result<Stream_> {
    let mut stream = transport::connect(tls, host, port).await?;
    let mut buf = BytesMut::new();
    write_packet(&connect, &mut buf)
        .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, "CONNECT", e))?;
    stream
        .write_all(&buf)
        .await
        .map_err(|e| Error::with_source(ErrorKind::Connect, "sending CONNECT", e))?;
    buf.clear();
    loop {
        match read_packet(&mut buf, MAX_PACKET_BYTES) {
            Ok(Some(Packet::ConnAck(ack))) => {
                use azure_iot_protocol::mqtt::codec::ConnectReturnCode;
                return match ack.code {
                    ConnectReturnCode::Success => Ok(stream),
                    code if Session::is_unauthorized(code) => Err(Error::new(
                        ErrorKind::Unauthorized,
                        format!("the hub refused the credentials ({code:?})"),
                    )),
                    ConnectReturnCode::ServiceUnavailable => Err(Error::new(
                        ErrorKind::Connect,
                        "the hub is unavailable (CONNACK 3); try again later",
                    )),
                    code => Err(Error::new(
                        ErrorKind::Refused,
                        format!("the hub refused the connection ({code:?})"),
                    )),
                };
            }
            Ok(Some(other)) => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("expected CONNACK, the hub sent {other:?}"),
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(Error::with_source(ErrorKind::Protocol, "CONNACK", e)),
        }
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| Error::with_source(ErrorKind::Connect, "reading CONNACK", e))?;
        if n == 0 {
            return Err(Error::new(
                ErrorKind::Connect,
                "the hub closed the connection before answering CONNECT",
            ));
        }
    }
}

/// What a packet id's PUBACK or SUBACK completes.
enum Waiter {
    /// A PUBLISH whose PUBACK completes a caller; kept to send again after a reconnect.
    Ack(u64, Publish, oneshot::Sender<Result<()>>),
    /// A twin request's PUBLISH: the answer comes on the response topic, not in the PUBACK.
    TwinRequest(u64, Publish),
    Subscribe(Feature, Option<oneshot::Sender<Result<()>>>),
}

/// Who waits for a twin response.
enum TwinWaiter {
    Caller(oneshot::Sender<Result<TwinAnswer>>),
    /// The driver's own GET that learns the desired version (`resync: false`) or recovers a
    /// change missed while disconnected (`resync: true`).
    Desired {
        resync: bool,
    },
}

struct Driver {
    session: Session,
    connector: Connector,
    retry: SharedRetryPolicy,
    commands: mpsc::Receiver<Command>,
    reader: ReadHalf<Stream_>,
    writer: WriteHalf<Stream_>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    acks: HashMap<u16, Waiter>,
    /// Orders unacknowledged publishes for resending.
    next_seq: u64,
    twin: HashMap<String, TwinWaiter>,
    c2d: Option<mpsc::UnboundedSender<Message>>,
    desired: Option<mpsc::UnboundedSender<DesiredPatch>>,
    /// The newest desired version the application has been given (or had at subscribe).
    desired_version: Option<i64>,
    methods: Option<mpsc::UnboundedSender<MethodRequest>>,
    state: watch::Sender<ConnectionState>,
    keep_alive: Duration,
    last_sent: Instant,
    ping_sent: Option<Instant>,
    /// When to reconnect with a fresh token (`None` for a token the client cannot renew).
    renew_at: Option<Instant>,
}

/// Why the driver stopped.
enum Stop {
    Reason(DisconnectReason),
    Closed(Option<oneshot::Sender<()>>),
    /// The token is due for renewal: MQTT 3.1.1 can only change it by reconnecting.
    Renew,
}

impl Driver {
    async fn run(mut self) {
        let (reason, done) = loop {
            match self.serve().await {
                Stop::Closed(done) => {
                    self.write_buf.clear();
                    let _ = write_packet(&Packet::Disconnect, &mut self.write_buf);
                    let _ = self.writer.write_all(&self.write_buf).await;
                    let _ = self.writer.shutdown().await;
                    break (DisconnectReason::ClosedByUser, done);
                }
                Stop::Renew => {
                    if self.renew().await {
                        continue;
                    }
                    let reason = DisconnectReason::Network;
                    self.state
                        .send_replace(ConnectionState::Disconnected(reason));
                    match self.reconnect().await {
                        Ok(()) => {
                            self.state.send_replace(ConnectionState::Connected);
                        }
                        Err(Stop::Closed(done)) => break (DisconnectReason::ClosedByUser, done),
                        Err(Stop::Reason(reason)) => break (reason, None),
                        Err(Stop::Renew) => break (DisconnectReason::RetriesExhausted, None),
                    }
                }
                Stop::Reason(reason) => {
                    tracing::debug!(client_id = %self.session.identity().client_id(), ?reason, "connection lost");
                    self.state
                        .send_replace(ConnectionState::Disconnected(reason));
                    match self.reconnect().await {
                        Ok(()) => {
                            self.state.send_replace(ConnectionState::Connected);
                        }
                        Err(Stop::Closed(done)) => break (DisconnectReason::ClosedByUser, done),
                        Err(Stop::Reason(reason)) => break (reason, None),
                        Err(Stop::Renew) => break (DisconnectReason::RetriesExhausted, None),
                    }
                }
            }
        };
        tracing::debug!(client_id = %self.session.identity().client_id(), ?reason, "stopped");
        // Set the state before dropping the waiters so that callers see why.
        self.state
            .send_replace(ConnectionState::Disconnected(reason));
        self.fail_all(reason);
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    /// Connects again by the retry policy, taking commands meanwhile (they are sent once
    /// connected). `Err` when the policy gives up, the credentials are refused, or the user
    /// closes the client.
    async fn reconnect(&mut self) -> Result<(), Stop> {
        let started = Instant::now();
        let mut attempt = 0;
        let mut class = ErrorClass::Transient;
        let mut last_kind = ErrorKind::Disconnected;
        loop {
            let Some(delay) =
                self.retry
                    .next_delay(&RetryAttempt::new(attempt, class, started.elapsed()))
            else {
                return Err(Stop::Reason(match last_kind {
                    ErrorKind::Unauthorized => DisconnectReason::Unauthorized,
                    ErrorKind::Refused => DisconnectReason::Refused,
                    _ => DisconnectReason::RetriesExhausted,
                }));
            };
            attempt = attempt.saturating_add(1);
            let wake = Instant::now() + delay;
            let connected = loop {
                tokio::select! {
                    command = self.commands.recv() => match command {
                        None => return Err(Stop::Closed(None)),
                        Some(Command::Close(done)) => return Err(Stop::Closed(Some(done))),
                        Some(command) => self.handle_command(command),
                    },
                    () = sleep_until(wake) => break self.connector.connect(&self.session).await,
                }
            };
            match connected {
                Ok((stream, renew_at)) => {
                    self.install(stream, renew_at);
                    tracing::debug!(client_id = %self.session.identity().client_id(), attempt, "reconnected");
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "reconnect failed");
                    last_kind = e.kind();
                    class = match e.kind() {
                        ErrorKind::Unauthorized
                        | ErrorKind::Refused
                        | ErrorKind::InvalidArgument => ErrorClass::Permanent,
                        _ => ErrorClass::Transient,
                    };
                }
            }
        }
    }

    /// Replaces the connection with one authenticated by a fresh token, without reporting a
    /// disconnection: in-flight PUBLISHes are sent again on the new connection, so no
    /// operation fails or is lost. `false` if the new connection could not be made (the
    /// caller then falls back to the retry policy).
    async fn renew(&mut self) -> bool {
        self.write_buf.clear();
        let _ = write_packet(&Packet::Disconnect, &mut self.write_buf);
        let _ = self.writer.write_all(&self.write_buf).await;
        let _ = self.writer.shutdown().await;
        match self.connector.connect(&self.session).await {
            Ok((stream, renew_at)) => {
                self.install(stream, renew_at);
                tracing::debug!(client_id = %self.session.identity().client_id(), "token renewed");
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "renewal reconnect failed");
                false
            }
        }
    }

    /// Makes `stream` the connection and resumes the session on it.
    fn install(&mut self, stream: Stream_, renew_at: Option<Instant>) {
        let (reader, writer) = tokio::io::split(stream);
        self.reader = reader;
        self.writer = writer;
        self.renew_at = renew_at;
        self.resume();
    }

    /// After a reconnect: subscribe again, send every unacknowledged PUBLISH again (DUP set),
    /// and ask for the twin to recover desired changes missed while away.
    fn resume(&mut self) {
        self.read_buf.clear();
        self.write_buf.clear();
        self.ping_sent = None;
        self.last_sent = Instant::now();
        self.session.clear_subscriptions();
        let mut pending_subscribes: HashMap<Feature, Vec<oneshot::Sender<Result<()>>>> =
            HashMap::new();
        let mut resend = Vec::new();
        for (_, waiter) in self.acks.drain() {
            match waiter {
                Waiter::Subscribe(feature, tx) => {
                    pending_subscribes.entry(feature).or_default().extend(tx);
                }
                Waiter::Ack(seq, publish, tx) => resend.push((seq, publish, Some(tx))),
                Waiter::TwinRequest(seq, publish) => resend.push((seq, publish, None)),
            }
        }
        let mut features = Vec::new();
        if self.c2d.is_some() {
            features.push(Feature::CloudToDevice);
        }
        if self.methods.is_some() {
            features.push(Feature::Methods);
        }
        if self.desired.is_some() {
            features.push(Feature::DesiredPatches);
        }
        for feature in features {
            if let Some((pkid, packet)) = self.session.subscribe(feature) {
                self.queue(&packet);
                let mut txs = pending_subscribes.remove(&feature).unwrap_or_default();
                let first = txs.pop();
                for tx in txs {
                    let _ = tx.send(Ok(()));
                }
                self.acks.insert(pkid, Waiter::Subscribe(feature, first));
            }
        }
        if !self.twin.is_empty() || self.desired.is_some() {
            self.ensure_subscribed(Feature::TwinResponses);
        }
        // Subscriptions that are no longer wanted (their stream was replaced) just succeed.
        for tx in pending_subscribes.into_values().flatten() {
            let _ = tx.send(Ok(()));
        }
        resend.sort_by_key(|(seq, ..)| *seq);
        for (seq, mut publish, tx) in resend {
            publish.dup = true;
            self.queue(&Packet::Publish(publish.clone()));
            let waiter = match tx {
                Some(tx) => Waiter::Ack(seq, publish.clone(), tx),
                None => Waiter::TwinRequest(seq, publish.clone()),
            };
            self.acks.insert(publish.pkid, waiter);
        }
        if self.desired.is_some() {
            self.desired_get(true);
        }
    }

    /// Sends the driver's own twin GET (see [`TwinWaiter::Desired`]).
    fn desired_get(&mut self, resync: bool) {
        self.ensure_subscribed(Feature::TwinResponses);
        let (rid, pkid, publish) = self.session.twin_get();
        self.queue(&Packet::Publish(publish.clone()));
        let seq = self.seq();
        self.acks.insert(pkid, Waiter::TwinRequest(seq, publish));
        self.twin.insert(rid, TwinWaiter::Desired { resync });
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn fail_all(&mut self, reason: DisconnectReason) {
        let error = || match reason {
            DisconnectReason::ClosedByUser => {
                Error::new(ErrorKind::Closed, "the client was closed")
            }
            other => Error::new(
                ErrorKind::Disconnected,
                format!("the connection to the hub was lost ({other:?})"),
            ),
        };
        for (_, waiter) in self.acks.drain() {
            match waiter {
                Waiter::Ack(_, _, tx) | Waiter::Subscribe(_, Some(tx)) => {
                    let _ = tx.send(Err(error()));
                }
                Waiter::Subscribe(_, None) | Waiter::TwinRequest(..) => {}
            }
        }
        for (_, waiter) in self.twin.drain() {
            if let TwinWaiter::Caller(tx) = waiter {
                let _ = tx.send(Err(error()));
            }
        }
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::SendEvent(_, tx)
                | Command::RespondToMethod(_, tx)
                | Command::Subscribe(_, tx) => {
                    let _ = tx.send(Err(error()));
                }
                Command::TwinGet(tx) | Command::PatchReported(_, tx) => {
                    let _ = tx.send(Err(error()));
                }
                Command::Close(done) => {
                    let _ = done.send(());
                }
            }
        }
        self.c2d = None;
        self.desired = None;
        self.methods = None;
    }

    async fn serve(&mut self) -> Stop {
        loop {
            // Packets queued by the last event, or by `resume` after a reconnect.
            if !self.write_buf.is_empty() {
                if self.writer.write_all(&self.write_buf).await.is_err() {
                    return Stop::Reason(DisconnectReason::Network);
                }
                self.write_buf.clear();
                self.last_sent = Instant::now();
            }
            let deadline = match self.renew_at {
                Some(renew) => self.next_deadline().min(renew),
                None => self.next_deadline(),
            };
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => return Stop::Closed(None),
                    Some(Command::Close(done)) => return Stop::Closed(Some(done)),
                    Some(command) => self.handle_command(command),
                },
                read = self.reader.read_buf(&mut self.read_buf) => match read {
                    Ok(0) | Err(_) => return Stop::Reason(DisconnectReason::Network),
                    Ok(_) => {
                        if let Err(reason) = self.handle_input() {
                            return Stop::Reason(reason);
                        }
                    }
                },
                () = sleep_until(deadline) => {
                    if self.renew_at.is_some_and(|at| Instant::now() >= at) {
                        return Stop::Renew;
                    }
                    if let Err(reason) = self.on_deadline() {
                        return Stop::Reason(reason);
                    }
                }
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        if self.keep_alive.is_zero() {
            // Keep-alive off (MQTT allows 0): wake only for I/O.
            return Instant::now() + Duration::from_secs(86_400);
        }
        match self.ping_sent {
            // The hub must answer a PINGREQ within half a keep-alive.
            Some(sent) => sent + self.keep_alive / 2,
            None => self.last_sent + self.keep_alive,
        }
    }

    fn on_deadline(&mut self) -> Result<(), DisconnectReason> {
        if self.keep_alive.is_zero() {
            return Ok(());
        }
        if self.ping_sent.is_some() {
            return Err(DisconnectReason::KeepAliveTimeout);
        }
        self.queue(&Packet::PingReq);
        self.ping_sent = Some(Instant::now());
        // Callers that timed out dropped their receivers; forget them.
        self.acks.retain(|_, w| match w {
            Waiter::Ack(_, _, tx) => !tx.is_closed(),
            _ => true,
        });
        self.twin.retain(|_, w| match w {
            TwinWaiter::Caller(tx) => !tx.is_closed(),
            TwinWaiter::Desired { .. } => true,
        });
        Ok(())
    }

    fn queue(&mut self, packet: &Packet) {
        // Every packet this driver builds is within the codec's limits (messages are
        // checked against 256 KiB before they reach it), so encoding cannot fail.
        if let Err(e) = write_packet(packet, &mut self.write_buf) {
            tracing::error!(error = %e, "could not encode a packet");
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::SendEvent(message, tx) => {
                let (pkid, packet) = self.session.telemetry(&message);
                self.track(pkid, packet, Some(tx));
            }
            Command::RespondToMethod(response, tx) => {
                let (pkid, packet) = self.session.method_response(&response);
                self.track(pkid, packet, Some(tx));
            }
            Command::TwinGet(tx) => {
                self.ensure_subscribed(Feature::TwinResponses);
                let (rid, pkid, packet) = self.session.twin_get();
                self.track(pkid, packet, None);
                self.twin.insert(rid, TwinWaiter::Caller(tx));
            }
            Command::PatchReported(body, tx) => {
                self.ensure_subscribed(Feature::TwinResponses);
                let (rid, pkid, packet) = self.session.patch_reported(body);
                self.track(pkid, packet, None);
                self.twin.insert(rid, TwinWaiter::Caller(tx));
            }
            Command::Subscribe(sink, tx) => {
                let feature = sink.feature();
                match sink {
                    Sink::CloudToDevice(s) => self.c2d = Some(s),
                    Sink::Desired(s) => {
                        self.desired = Some(s);
                        if self.desired_version.is_none() {
                            // Learn the current version, so that a reconnect can tell
                            // whether a change was missed.
                            self.desired_get(false);
                        }
                    }
                    Sink::Methods(s) => self.methods = Some(s),
                }
                match self.session.subscribe(feature) {
                    Some((pkid, packet)) => {
                        self.queue(&packet);
                        self.acks.insert(pkid, Waiter::Subscribe(feature, Some(tx)));
                    }
                    None => {
                        let _ = tx.send(Ok(()));
                    }
                }
            }
            Command::Close(_) => {}
        }
    }

    /// Queues a PUBLISH and remembers it until its PUBACK: `tx` is completed by the PUBACK,
    /// `None` marks a twin request (completed by the twin response).
    fn track(&mut self, pkid: u16, publish: Publish, tx: Option<oneshot::Sender<Result<()>>>) {
        self.queue(&Packet::Publish(publish.clone()));
        let seq = self.seq();
        let waiter = match tx {
            Some(tx) => Waiter::Ack(seq, publish, tx),
            None => Waiter::TwinRequest(seq, publish),
        };
        self.acks.insert(pkid, waiter);
    }

    /// Subscribes to `feature` without waiting: the hub handles a connection's packets in
    /// order, so a request published right after the SUBSCRIBE gets its answer delivered.
    fn ensure_subscribed(&mut self, feature: Feature) {
        if let Some((pkid, packet)) = self.session.subscribe(feature) {
            self.queue(&packet);
            self.session.subscribed(feature);
            self.acks.insert(pkid, Waiter::Subscribe(feature, None));
        }
    }

    fn handle_input(&mut self) -> Result<(), DisconnectReason> {
        loop {
            let packet = match read_packet(&mut self.read_buf, MAX_PACKET_BYTES) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "the hub sent a malformed packet");
                    return Err(DisconnectReason::ProtocolError);
                }
            };
            let ack = match &packet {
                Packet::Publish(publish) => Session::ack_for(publish),
                _ => None,
            };
            let inbound = self.session.decode(packet).map_err(|violation| {
                tracing::warn!(violation = %violation.0, "closing the connection");
                DisconnectReason::ProtocolError
            })?;
            if let Some(ack) = ack {
                self.queue(&ack);
            }
            if let Some(inbound) = inbound {
                self.dispatch(inbound);
            }
        }
    }

    fn dispatch(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::PubAck(pkid) => match self.acks.remove(&pkid) {
                Some(Waiter::Ack(_, _, tx)) => {
                    let _ = tx.send(Ok(()));
                }
                Some(other) => {
                    // A PUBACK for a SUBSCRIBE's id would be a hub bug; keep the waiter.
                    if let Waiter::Subscribe(..) = other {
                        self.acks.insert(pkid, other);
                    }
                }
                None => {}
            },
            Inbound::SubAck { pkid, granted } => {
                if let Some(Waiter::Subscribe(feature, tx)) = self.acks.remove(&pkid) {
                    let result = if granted {
                        self.session.subscribed(feature);
                        Ok(())
                    } else {
                        Err(Error::new(
                            ErrorKind::Refused,
                            format!("the hub refused the {feature:?} subscription"),
                        ))
                    };
                    if let Some(tx) = tx {
                        let _ = tx.send(result);
                    }
                }
            }
            Inbound::CloudToDevice(message) => {
                if let Some(tx) = &self.c2d {
                    let _ = tx.send(*message);
                }
            }
            Inbound::TwinResponse {
                request_id,
                status,
                version,
                body,
            } => match self.twin.remove(&request_id) {
                Some(TwinWaiter::Caller(tx)) => {
                    let _ = tx.send(Ok(TwinAnswer {
                        status,
                        version,
                        body,
                    }));
                }
                Some(TwinWaiter::Desired { resync }) if status == 200 => {
                    self.desired_answer(resync, &body);
                }
                Some(TwinWaiter::Desired { .. }) | None => {}
            },
            Inbound::DesiredPatch { version, body } => {
                let patch = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if self.desired_version.is_some_and(|seen| version <= seen) {
                    return; // already delivered, by a resync after a reconnect
                }
                self.desired_version = Some(version);
                if let Some(tx) = &self.desired {
                    let _ = tx.send(DesiredPatch { version, patch });
                }
            }
            Inbound::Method(request) => {
                if let Some(tx) = &self.methods {
                    let _ = tx.send(request);
                }
            }
            Inbound::Pong => self.ping_sent = None,
        }
    }
}

impl Driver {
    /// The driver's own twin GET answered: record the desired version, and after a
    /// reconnect hand the whole desired document to the application if it changed.
    fn desired_answer(&mut self, resync: bool, body: &[u8]) {
        let Ok(mut doc) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let desired = doc.get_mut("desired").map(Value::take).unwrap_or_default();
        let Some(version) = desired.get("$version").and_then(Value::as_i64) else {
            return;
        };
        let missed = self.desired_version.is_none_or(|seen| version > seen);
        if !missed {
            return;
        }
        self.desired_version = Some(version);
        if resync && let Some(tx) = &self.desired {
            let _ = tx.send(DesiredPatch {
                version,
                patch: desired,
            });
        }
    }
}
