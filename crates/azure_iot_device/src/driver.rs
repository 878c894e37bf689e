//! The driver task: the one owner of a client's connection.
//!
//! It takes [`Command`]s from the handles, writes the packets the [`Session`] builds, reads
//! the hub's packets and completes each caller's oneshot. When the connection is lost it
//! reconnects by the retry policy and resumes the session (resubscribe, resend unacknowledged
//! PUBLISHes, recover missed desired changes); before the SAS token expires it renews it the
//! same way, without reporting a disconnection.

use std::collections::HashMap;
use std::time::Duration;

use azure_iot_core::Message;
use azure_iot_core::method::MethodRequest;
use azure_iot_core::retry::{ErrorClass, RetryAttempt, RetryPolicy, SharedRetryPolicy};
use azure_iot_core::sas::ResourceUri;
use azure_iot_protocol::mqtt::codec::{
    MAX_PACKET_BYTES, Packet, Publish, read_packet, write_packet,
};
use bytes::BytesMut;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout};

use crate::auth::Credential;
use crate::client::{Command, ConnectionState, DesiredPatch, DisconnectReason, Sink, TwinAnswer};
use crate::error::{Error, ErrorKind, Result};
use crate::options::Transport;
use crate::session::{Feature, Inbound, Session};
use crate::transport::{self, Connection};

type Stream_ = Connection;

/// What [`spawn`] needs: a connected stream and everything to keep it going.
pub(crate) struct Parts {
    pub(crate) session: Session,
    pub(crate) connector: Connector,
    pub(crate) retry: SharedRetryPolicy,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) link: Link,
    pub(crate) state: watch::Sender<ConnectionState>,
}

/// A connection the hub accepted.
pub(crate) struct Link {
    pub(crate) stream: Stream_,
    /// Bytes read after the CONNACK: the hub may send queued messages in the same TLS record.
    pub(crate) buffered: BytesMut,
    /// When to renew the token (`None`: a token the client cannot renew).
    pub(crate) renew_at: Option<Instant>,
}

/// Starts the driver task on the current tokio runtime.
pub(crate) fn spawn(parts: Parts) {
    let (reader, writer) = tokio::io::split(parts.link.stream);
    let keep_alive = Duration::from_secs(u64::from(parts.connector.keep_alive_secs));
    tracing::debug!(client_id = %parts.session.identity().client_id(), "connected");
    let driver = Driver {
        session: parts.session,
        connector: parts.connector,
        retry: parts.retry,
        commands: parts.commands,
        reader,
        writer,
        read_buf: parts.link.buffered,
        write_buf: BytesMut::with_capacity(4096),
        acks: HashMap::new(),
        next_seq: 0,
        twin: HashMap::new(),
        c2d: None,
        c2d_waiting: std::collections::VecDeque::new(),
        desired: None,
        desired_version: None,
        methods: None,
        state: parts.state,
        keep_alive,
        last_sent: Instant::now(),
        ping_sent: None,
        renew_at: parts.link.renew_at,
    };
    tokio::spawn(driver.run());
}

/// IoT Hub queues at most 50 cloud-to-device messages per device; the client holds as many
/// for a stream that is not open yet.
const C2D_WAITING_MAX: usize = 50;

/// Everything needed to open a connection again: the driver keeps it for reconnecting.
pub(crate) struct Connector {
    pub(crate) tls: std::sync::Arc<rustls::ClientConfig>,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) transport: Transport,
    pub(crate) proxy: Option<crate::options::Proxy>,
    pub(crate) credential: Credential,
    pub(crate) resource: ResourceUri,
    pub(crate) token_ttl: Duration,
    pub(crate) keep_alive_secs: u16,
    pub(crate) timeout: Duration,
}

impl Connector {
    /// Whether the credential is a given token that has expired: no reconnect can work.
    fn token_expired(&self) -> bool {
        match &self.credential {
            Credential::Token(token) => token.expires_at() <= std::time::SystemTime::now(),
            Credential::Key { .. } | Credential::Provider(_) | Credential::X509 => false,
        }
    }

    /// TLS, CONNECT with a freshly signed token, CONNACK, within the operation timeout.
    ///
    /// Also returns when to renew: at 85 % of the signed token's remaining life (its expiry
    /// is rounded down to a whole second, so a short TTL can leave less than it says), so the
    /// renewal completes before the hub closes the connection at expiry. `None` when the
    /// client holds a token it cannot renew.
    pub(crate) async fn connect(&self, session: &Session) -> Result<Link> {
        // A token provider is the application's code: bounded like the rest of the connect.
        let (password, expires) = timeout(
            self.timeout,
            self.credential.password(&self.resource, self.token_ttl),
        )
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!("the token provider gave no token within {:?}", self.timeout),
            )
        })??;
        let connect = session.connect(&password, self.keep_alive_secs);
        let renew_at = expires.map(|expiry| {
            let left = expiry
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            Instant::now() + left.mul_f64(0.85)
        });
        let (stream, buffered) = timeout(
            self.timeout,
            handshake(
                self.tls.clone(),
                &self.host,
                self.port,
                self.transport,
                self.proxy.as_ref(),
                connect,
            ),
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
        Ok(Link {
            stream,
            buffered,
            renew_at,
        })
    }
}

/// TLS, CONNECT, CONNACK.
async fn handshake(
    tls: std::sync::Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
    transport: Transport,
    proxy: Option<&crate::options::Proxy>,
    connect: Packet,
) -> Result<(Stream_, BytesMut)> {
    let mut stream = transport::connect(tls, host, port, transport, proxy).await?;
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
                    // Whatever followed the CONNACK is the driver's to read.
                    ConnectReturnCode::Success => Ok((stream, buf)),
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
    /// Cloud-to-device messages that arrived while no stream was open (a persistent session
    /// delivers queued messages right after CONNACK, before the application asks): the next
    /// stream gets them first. At most the hub's queue depth.
    c2d_waiting: std::collections::VecDeque<Message>,
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

/// Why reconnecting stopped for good.
enum Ended {
    /// The user closed the client (with the close call's completion, if any).
    Closed(Option<oneshot::Sender<()>>),
    /// Credentials refused, token expired, or the retry policy gave up.
    Final(DisconnectReason),
}

impl Driver {
    async fn run(mut self) {
        let (reason, done) = loop {
            let lost = match self.serve().await {
                Stop::Closed(done) => {
                    self.disconnect().await;
                    break (DisconnectReason::ClosedByUser, done);
                }
                // A failed renewal falls back to the retry policy like a lost connection.
                Stop::Renew if self.renew().await => continue,
                Stop::Renew => DisconnectReason::Network,
                Stop::Reason(reason) => reason,
            };
            tracing::debug!(client_id = %self.session.identity().client_id(), ?lost, "connection lost");
            self.state.send_replace(ConnectionState::Disconnected(lost));
            match self.reconnect().await {
                Ok(()) => {
                    self.state.send_replace(ConnectionState::Connected);
                }
                Err(Ended::Closed(done)) => break (DisconnectReason::ClosedByUser, done),
                Err(Ended::Final(reason)) => break (reason, None),
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
    async fn reconnect(&mut self) -> Result<(), Ended> {
        let started = Instant::now();
        let mut attempt = 0;
        let mut class = ErrorClass::Transient;
        let mut last_kind = ErrorKind::Disconnected;
        loop {
            if self.connector.token_expired() {
                return Err(Ended::Final(DisconnectReason::ExpiredToken));
            }
            let Some(delay) =
                self.retry
                    .next_delay(&RetryAttempt::new(attempt, class, started.elapsed()))
            else {
                return Err(Ended::Final(match last_kind {
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
                        None => return Err(Ended::Closed(None)),
                        Some(Command::Close(done)) => return Err(Ended::Closed(Some(done))),
                        Some(command) => self.handle_command(command),
                    },
                    () = sleep_until(wake) => break self.connector.connect(&self.session).await,
                }
            };
            match connected {
                Ok(link) => {
                    self.install(link);
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

    /// Ends the current connection cleanly (MQTT DISCONNECT, then TLS close_notify). Errors
    /// are ignored: the connection is being abandoned either way.
    async fn disconnect(&mut self) {
        self.write_buf.clear();
        let _ = write_packet(&Packet::Disconnect, &mut self.write_buf);
        let _ = self.writer.write_all(&self.write_buf).await;
        let _ = self.writer.shutdown().await;
        self.write_buf.clear();
    }

    /// Replaces the connection with one authenticated by a fresh token, without reporting a
    /// disconnection: in-flight PUBLISHes are sent again on the new connection, so no
    /// operation fails or is lost. `false` if the new connection could not be made (the
    /// caller then falls back to the retry policy).
    async fn renew(&mut self) -> bool {
        self.disconnect().await;
        match self.connector.connect(&self.session).await {
            Ok(link) => {
                self.install(link);
                tracing::debug!(client_id = %self.session.identity().client_id(), "token renewed");
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "renewal reconnect failed");
                false
            }
        }
    }

    /// Makes `link` the connection and resumes the session on it.
    fn install(&mut self, link: Link) {
        let (reader, writer) = tokio::io::split(link.stream);
        self.reader = reader;
        self.writer = writer;
        self.renew_at = link.renew_at;
        self.resume();
        self.read_buf = link.buffered;
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
        // Packets that arrived with the CONNACK (queued cloud-to-device messages, pending
        // desired patches) are already buffered: handle them before waiting for more.
        if let Err(reason) = self.handle_input() {
            return Stop::Reason(reason);
        }
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
                    Sink::CloudToDevice(s) => {
                        while let Some(message) = self.c2d_waiting.pop_front() {
                            if let Err(unsent) = s.send(message) {
                                self.c2d_waiting.push_front(unsent.0);
                                break;
                            }
                        }
                        self.c2d = Some(s);
                    }
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
                let unsent = match &self.c2d {
                    Some(tx) => tx.send(*message).err().map(|e| e.0),
                    None => Some(*message),
                };
                if let Some(message) = unsent {
                    if self.c2d_waiting.len() == C2D_WAITING_MAX {
                        tracing::warn!(
                            "{C2D_WAITING_MAX} cloud-to-device messages wait for a stream; \
                             dropping the oldest"
                        );
                        self.c2d_waiting.pop_front();
                    }
                    self.c2d_waiting.push_back(message);
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
