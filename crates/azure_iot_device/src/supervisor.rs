//! The supervisor: the one task that owns a client's connection, whatever the transport.
//!
//! It takes [`Command`]s from the handles, hands their operations to an [`Engine`] and
//! completes each caller when the engine reports the answer. Around the engine it does what
//! every transport needs alike:
//!
//! * **Reconnect** by the retry policy when the engine reports the connection lost (refused
//!   credentials, an expired given token and a policy that gives up are final), taking
//!   commands meanwhile: the engine keeps them and sends them once connected.
//! * **SAS renewal**: at 85 % of the token's life it hands the engine a fresh token
//!   ([`Engine::renew`]) without reporting a disconnection: AMQP puts it on the live
//!   connection, MQTT reconnects (it can change credentials no other way).
//! * **Failing waiters** with the final reason when it stops, and ending every stream.
//! * **Dropping operations whose caller has gone**: each operation carries its caller's
//!   deadline, after which the engine never sends it; a caller that times out or drops its
//!   future says so on the `gone` channel (a drop guard) and its operation is withdrawn
//!   with [`Engine::cancel`] at once, releasing its permit. As a backstop, callers found gone
//!   are also withdrawn every [`SWEEP`] and right after every reconnect, before anything is
//!   written on the new connection.
//! * **Flow control**: a call holds one of `max_pending_operations` permits from before its
//!   command is queued until its answer (or its caller's departure), so the operations held
//!   (in the channel, here and in the engine) never exceed that bound. Inbound streams are
//!   bounded channels; when one is full the supervisor keeps the message that did not fit
//!   and calls [`Engine::next`] with `reading: false` until the application makes room.
//! * **Desired-twin resync**: after a reconnect it reads the twin and hands a desired change
//!   made meanwhile to the desired-patch stream as one patch, once.
//! * **Inbound buffering**: cloud-to-device messages that arrive before the application
//!   opened their stream (a persistent session delivers queued messages right after
//!   connecting) are kept, unsettled, for the first stream.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use azure_iot_core::Message;
use azure_iot_core::method::MethodRequest;
use azure_iot_core::retry::{ErrorClass, RetryAttempt, RetryPolicy, SharedRetryPolicy};
use azure_iot_core::sas::ResourceUri;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout};

use crate::auth::Credential;
use crate::client::{
    C2dSink, Command, ConnectionState, DesiredPatch, DisconnectReason, ReceivedMessage, Request,
    Responder, Settlement, Sink,
};
use crate::engine::{DeliveryTag, Engine, EngineEvent, OpId, Operation, Outcome, Reply};
use crate::error::{Error, ErrorKind, Result};

/// How often callers that dropped their futures are looked for.
pub(crate) const SWEEP: Duration = Duration::from_secs(1);

/// Received messages the application may hold unsettled at once (each holds a slot; past
/// that the stream counts as full). Also the settlement channel's capacity, so a settlement
/// always fits.
pub(crate) const MAX_UNSETTLED: usize = 256;

/// IoT Hub keeps at most 50 cloud-to-device messages in flight per device; the client holds
/// as many for a stream that is not open yet. More are left unacknowledged (the hub delivers
/// them again on the next connection): with no stream to drain them, stopping reading instead
/// would starve twin answers and method calls for good.
const C2D_WAITING_MAX: usize = 50;

/// How the client authenticates each connection, and within what time.
pub(crate) struct Auth {
    /// The credential.
    pub(crate) credential: Credential,
    /// What tokens are signed for.
    pub(crate) resource: ResourceUri,
    /// How long signed tokens live.
    pub(crate) token_ttl: Duration,
    /// The operation timeout, which bounds each connection attempt.
    pub(crate) timeout: Duration,
}

impl Auth {
    /// Whether the credential is a given token that has expired: no reconnect can work.
    fn token_expired(&self) -> bool {
        match &self.credential {
            Credential::Token(token) => token.expires_at() <= std::time::SystemTime::now(),
            Credential::Key { .. } | Credential::Provider(_) | Credential::X509 => false,
        }
    }

    /// Connects `engine` with a freshly signed token, within the operation timeout.
    ///
    /// Returns when to renew: at 85 % of the signed token's remaining life (its expiry is
    /// rounded down to a whole second, so a short TTL can leave less than it says), so the
    /// renewal completes before the hub closes the connection at expiry. `None` when the
    /// client holds a token it cannot renew.
    pub(crate) async fn connect(&self, engine: &mut impl Engine) -> Result<Option<Instant>> {
        let (password, renew_at) = self.password().await?;
        self.within("connecting to the hub", engine.connect(Some(&password)))
            .await?;
        Ok(renew_at)
    }

    /// Puts a freshly signed token on `engine`'s connection ([`Engine::renew`]), within the
    /// operation timeout; returns when to renew next, like [`connect`](Self::connect).
    /// Also says whether the connection was kept ([`Engine::renew`]).
    async fn renew(&self, engine: &mut impl Engine) -> Result<(Option<Instant>, bool)> {
        let (password, renew_at) = self.password().await?;
        let kept = self
            .within("renewing the token", engine.renew(Some(&password)))
            .await?;
        Ok((renew_at, kept))
    }

    /// A token from the credential, and when to renew it.
    pub(crate) async fn password(&self) -> Result<(String, Option<Instant>)> {
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
        let renew_at = expires.map(|expiry| {
            let left = expiry
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            Instant::now() + left.mul_f64(0.85)
        });
        Ok((password, renew_at))
    }

    /// Runs `f` within the operation timeout.
    async fn within<T>(&self, what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
        timeout(self.timeout, f).await.map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!("{what} took longer than {:?}", self.timeout),
            )
        })?
    }
}

/// What [`spawn`] needs: a connected engine and everything to keep it going.
pub(crate) struct Parts<E> {
    pub(crate) engine: E,
    pub(crate) auth: Arc<Auth>,
    pub(crate) retry: SharedRetryPolicy,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) permits: Arc<Semaphore>,
    /// Calls whose caller went away (dropped its future or timed out), by call id.
    pub(crate) gone: mpsc::Receiver<u64>,
    pub(crate) state: watch::Sender<ConnectionState>,
    /// When to renew the token of the first connection.
    pub(crate) renew_at: Option<Instant>,
}

/// Starts the supervisor task on the current tokio runtime.
pub(crate) fn spawn<E: Engine>(parts: Parts<E>) {
    let (settle_tx, settlements) = mpsc::channel(MAX_UNSETTLED);
    let supervisor = Supervisor {
        engine: parts.engine,
        auth: parts.auth,
        retry: parts.retry,
        commands: parts.commands,
        permits: parts.permits,
        gone: parts.gone,
        calls: HashMap::new(),
        settle_tx,
        settlements,
        unsettled: Arc::new(Semaphore::new(MAX_UNSETTLED)),
        state: parts.state,
        waiters: HashMap::new(),
        c2d: None,
        c2d_waiting: VecDeque::new(),
        stalled: VecDeque::new(),
        desired: None,
        desired_version: None,
        methods: None,
        renew_at: parts.renew_at,
    };
    // The reconnect, renewal and close paths are boxed where `run` awaits them: inline, their
    // futures (TLS handshakes, AMQP attaches) made every client's task about 23 KiB larger.
    tokio::spawn(supervisor.run());
}

/// Who waits for an operation.
enum Waiter {
    /// An application call, holding its flow-control permit (and its call id, for an
    /// operation the caller can abandon).
    Caller(Responder, OwnedSemaphorePermit, Option<u64>),
    /// The supervisor's own twin GET that learns the desired version (`resync: false`) or
    /// recovers a change missed while disconnected (`resync: true`).
    Desired { resync: bool },
}

/// An inbound message waiting for room in its stream.
enum Inbound {
    CloudToDevice(Box<Message>, DeliveryTag),
    Desired(DesiredPatch),
    Method(MethodRequest),
}

/// Why serving a connection stopped.
enum Stop {
    Reason(DisconnectReason),
    Closed(Option<oneshot::Sender<()>>),
    /// The token is due for renewal.
    Renew,
}

/// Why reconnecting stopped for good.
enum Ended {
    /// The user closed the client (with the close call's completion, if any).
    Closed(Option<oneshot::Sender<()>>),
    /// Credentials refused, token expired, or the retry policy gave up.
    Final(DisconnectReason),
}

type Room = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Supervisor<E> {
    engine: E,
    auth: Arc<Auth>,
    retry: SharedRetryPolicy,
    commands: mpsc::Receiver<Command>,
    permits: Arc<Semaphore>,
    gone: mpsc::Receiver<u64>,
    /// Call id → operation, for the calls in `waiters`.
    calls: HashMap<u64, OpId>,
    settle_tx: mpsc::Sender<Settlement>,
    settlements: mpsc::Receiver<Settlement>,
    /// Slots of received messages the application has not settled yet.
    unsettled: Arc<Semaphore>,
    state: watch::Sender<ConnectionState>,
    waiters: HashMap<OpId, Waiter>,
    c2d: Option<C2dSink>,
    /// Cloud-to-device messages that arrived while no stream was open.
    c2d_waiting: VecDeque<(Box<Message>, DeliveryTag)>,
    /// Inbound messages that found their stream full, in arrival order.
    stalled: VecDeque<Inbound>,
    desired: Option<mpsc::Sender<DesiredPatch>>,
    /// The newest desired version the application has been given (or had at subscribe).
    desired_version: Option<i64>,
    methods: Option<mpsc::Sender<MethodRequest>>,
    /// When to reconnect with a fresh token (`None` for a token the client cannot renew).
    renew_at: Option<Instant>,
}

impl<E: Engine> Supervisor<E> {
    async fn run(mut self) {
        let (reason, done) = loop {
            let lost = match self.serve().await {
                Stop::Closed(done) => {
                    Box::pin(self.engine.close()).await;
                    break (DisconnectReason::ClosedByUser, done);
                }
                // A failed renewal falls back to the retry policy like a lost connection.
                Stop::Renew if Box::pin(self.renew()).await => continue,
                Stop::Renew => DisconnectReason::Network,
                Stop::Reason(reason) => reason,
            };
            tracing::debug!(?lost, "connection lost");
            self.state.send_replace(ConnectionState::Disconnected(lost));
            match Box::pin(self.reconnect()).await {
                Ok(()) => {
                    self.state.send_replace(ConnectionState::Connected);
                }
                Err(Ended::Closed(done)) => break (DisconnectReason::ClosedByUser, done),
                Err(Ended::Final(reason)) => break (reason, None),
            }
        };
        tracing::debug!(?reason, "stopped");
        // Set the state before dropping the waiters so that callers see why.
        self.state
            .send_replace(ConnectionState::Disconnected(reason));
        self.fail_all(reason);
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    /// Connects again by the retry policy, taking commands meanwhile. `Err` when the policy
    /// gives up, the credentials are refused, or the user closes the client.
    async fn reconnect(&mut self) -> Result<(), Ended> {
        let started = Instant::now();
        let mut attempt = 0;
        let mut class = ErrorClass::Transient;
        let mut last_kind = ErrorKind::Disconnected;
        loop {
            if self.auth.token_expired() {
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
            loop {
                tokio::select! {
                    command = self.commands.recv() => match command {
                        None => return Err(Ended::Closed(None)),
                        Some(Command::Close(done)) => return Err(Ended::Closed(Some(done))),
                        Some(command) => self.handle_command(command),
                    },
                    Some(settlement) = self.settlements.recv() => self.settle(settlement),
                    Some(call) = self.gone.recv() => self.withdraw(call),
                    // Offline the engine only reports operations whose deadline passed.
                    event = self.engine.next(false) => {
                        // Nothing but `Done` can come without a connection.
                        let _ = self.handle_event(event);
                    }
                    () = sleep_until(wake) => break,
                }
            }
            match self.auth.connect(&mut self.engine).await {
                Ok(renew_at) => {
                    self.renew_at = renew_at;
                    self.resumed();
                    tracing::debug!(attempt, "reconnected");
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

    /// Puts a fresh token on the connection ([`Engine::renew`]: on the live connection where
    /// the protocol can, else by reconnecting) without reporting a disconnection: nothing in
    /// flight fails or is lost. `false` if that could not be done.
    async fn renew(&mut self) -> bool {
        match self.auth.renew(&mut self.engine).await {
            Ok((renew_at, kept)) => {
                self.renew_at = renew_at;
                if kept {
                    // The same connection: its messages and their locks are still good.
                    self.sweep();
                } else {
                    self.resumed();
                }
                tracing::debug!("token renewed");
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "renewal reconnect failed");
                false
            }
        }
    }

    /// On a new connection, before anything is written: withdraw operations whose caller
    /// left, and read the twin to recover desired changes missed while away. Messages that
    /// waited for room belonged to the old connection: the hub delivers them again.
    fn resumed(&mut self) {
        self.sweep();
        self.stalled
            .retain(|item| !matches!(item, Inbound::CloudToDevice(..)));
        self.c2d_waiting.clear();
        if self.desired.is_some() {
            self.desired_get(true);
        }
    }

    /// Withdraws the operations whose caller dropped its future (or timed out).
    fn sweep(&mut self) {
        let gone: Vec<OpId> = self
            .waiters
            .iter()
            .filter(|(_, waiter)| match waiter {
                Waiter::Caller(reply, ..) => reply.is_closed(),
                Waiter::Desired { .. } => false,
            })
            .map(|(op, _)| *op)
            .collect();
        for op in gone {
            self.engine.cancel(op);
            if let Some(Waiter::Caller(_, _, Some(call))) = self.waiters.remove(&op) {
                self.calls.remove(&call);
            }
        }
    }

    /// The caller of `call` went away: its operation is never sent from now on.
    fn withdraw(&mut self, call: u64) {
        if let Some(op) = self.calls.remove(&call) {
            self.engine.cancel(op);
            self.waiters.remove(&op);
        }
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
        self.permits.close();
        self.calls.clear();
        for (_, waiter) in self.waiters.drain() {
            if let Waiter::Caller(reply, ..) = waiter {
                reply.fail(error());
            }
        }
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Operation(request) => request.reply.fail(error()),
                Command::Subscribe { done, .. } => {
                    let _ = done.send(Err(error()));
                }
                Command::Close(done) => {
                    let _ = done.send(());
                }
            }
        }
        self.c2d = None;
        self.desired = None;
        self.methods = None;
        self.stalled.clear();
        self.c2d_waiting.clear();
    }

    async fn serve(&mut self) -> Stop {
        let mut sweep = tokio::time::interval_at(Instant::now() + SWEEP, SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reading = self.stalled.is_empty();
            let room = self.room();
            let renew_at = self.renew_at;
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => return Stop::Closed(None),
                    Some(Command::Close(done)) => return Stop::Closed(Some(done)),
                    Some(command) => self.handle_command(command),
                },
                Some(settlement) = self.settlements.recv() => self.settle(settlement),
                Some(call) = self.gone.recv() => self.withdraw(call),
                event = self.engine.next(reading) => {
                    if let Err(reason) = self.handle_event(event) {
                        return Stop::Reason(reason);
                    }
                }
                () = async move {
                    match room {
                        Some(room) => room.await,
                        None => std::future::pending().await,
                    }
                } => self.unstall(),
                () = async move {
                    match renew_at {
                        Some(at) => sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => return Stop::Renew,
                _ = sweep.tick() => self.sweep(),
            }
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Operation(request) => {
                let Request {
                    operation,
                    reply,
                    deadline,
                    permit,
                    call,
                } = request;
                if reply.is_closed() {
                    return; // the caller has gone: never sent
                }
                if deadline <= Instant::now() {
                    // Never sent either; the caller learns it timed out (not that the
                    // connection was lost), whichever of the two it sees first.
                    reply.fail(Error::new(
                        ErrorKind::Timeout,
                        "the operation timed out before it could be sent",
                    ));
                    return;
                }
                let op = self.engine.submit(operation, deadline);
                self.calls.insert(call, op);
                self.waiters
                    .insert(op, Waiter::Caller(reply, permit, Some(call)));
            }
            Command::Subscribe {
                sink,
                done,
                deadline,
                permit,
            } => {
                let feature = sink.feature();
                match sink {
                    Sink::CloudToDevice(s) => {
                        self.c2d = Some(s);
                        // Messages that waited for a stream go first.
                        for (message, tag) in self.c2d_waiting.drain(..).rev() {
                            self.stalled
                                .push_front(Inbound::CloudToDevice(message, tag));
                        }
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
                let op = self.engine.submit(Operation::Subscribe(feature), deadline);
                self.waiters
                    .insert(op, Waiter::Caller(Responder::Unit(done), permit, None));
            }
            Command::Close(_) => {}
        }
    }

    /// Sends the supervisor's own twin GET (see [`Waiter::Desired`]).
    fn desired_get(&mut self, resync: bool) {
        let op = self
            .engine
            .submit(Operation::TwinGet, Instant::now() + self.auth.timeout);
        self.waiters.insert(op, Waiter::Desired { resync });
    }

    fn settle(&mut self, settlement: Settlement) {
        let result = self.engine.settle(settlement.tag, settlement.outcome);
        if let Some(done) = settlement.done {
            let _ = done.send(result);
        }
    }

    fn handle_event(&mut self, event: EngineEvent) -> Result<(), DisconnectReason> {
        match event {
            EngineEvent::Done(op, result) => match self.waiters.remove(&op) {
                Some(Waiter::Caller(reply, _permit, call)) => {
                    if let Some(call) = call {
                        self.calls.remove(&call);
                    }
                    reply.complete(result);
                }
                Some(Waiter::Desired { resync }) => {
                    if let Ok(Reply::Twin(answer)) = result
                        && answer.status == 200
                    {
                        self.desired_answer(resync, &answer.body);
                    }
                }
                None => {}
            },
            EngineEvent::CloudToDevice(message, tag) => {
                if self.c2d.is_none() {
                    self.hold_c2d(message, tag);
                } else {
                    self.inbound(Inbound::CloudToDevice(message, tag));
                }
            }
            EngineEvent::DesiredPatch { version, body } => {
                let patch = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if self.desired_version.is_some_and(|seen| version <= seen) {
                    return Ok(()); // already delivered, by a resync after a reconnect
                }
                self.desired_version = Some(version);
                if self.desired.is_some() {
                    self.inbound(Inbound::Desired(DesiredPatch { version, patch }));
                }
            }
            EngineEvent::Method(request) => {
                if self.methods.is_some() {
                    self.inbound(Inbound::Method(request));
                }
            }
            EngineEvent::Lost(reason) => return Err(reason),
        }
        Ok(())
    }

    /// Hands `item` to its stream, or keeps it (in order) until there is room.
    /// Keeps a cloud-to-device message for the stream the application has not opened yet, up
    /// to [`C2D_WAITING_MAX`]; beyond that it stays unacknowledged and the hub delivers it again.
    fn hold_c2d(&mut self, message: Box<Message>, tag: DeliveryTag) {
        if self.c2d_waiting.len() < C2D_WAITING_MAX {
            self.c2d_waiting.push_back((message, tag));
        } else {
            tracing::debug!(
                "{C2D_WAITING_MAX} cloud-to-device messages already wait for a stream; this one is left to the hub to deliver again"
            );
        }
    }

    fn inbound(&mut self, item: Inbound) {
        if self.stalled.is_empty() {
            if let Some(unsent) = self.try_deliver(item) {
                self.stalled.push_back(unsent);
            }
        } else {
            self.stalled.push_back(item);
        }
    }

    /// Delivers what waited for room, as far as there is room.
    fn unstall(&mut self) {
        while let Some(item) = self.stalled.pop_front() {
            if let Some(unsent) = self.try_deliver(item) {
                self.stalled.push_front(unsent);
                return;
            }
        }
    }

    /// Puts `item` into its stream; gives it back if the stream is full. A stream the
    /// application dropped is forgotten (a cloud-to-device message then waits for the next
    /// stream).
    fn try_deliver(&mut self, item: Inbound) -> Option<Inbound> {
        use mpsc::error::TrySendError;
        match item {
            Inbound::CloudToDevice(message, tag) => {
                // `Err(closed)` gives the message back: the stream is full, or gone.
                let fit: Result<(), bool> = match &self.c2d {
                    Some(C2dSink::Completed(tx)) => match tx.try_reserve() {
                        Ok(permit) => {
                            // Completed as it is handed over: the hub deletes it.
                            if let Err(e) = self.engine.settle(tag, Outcome::Complete) {
                                tracing::debug!(error = %e, "completing a message");
                            }
                            permit.send(*message);
                            return None;
                        }
                        Err(TrySendError::Full(())) => Err(false),
                        Err(TrySendError::Closed(())) => Err(true),
                    },
                    // The application holding MAX_UNSETTLED messages counts as a full stream.
                    Some(C2dSink::Settled(tx)) => {
                        match (self.unsettled.clone().try_acquire_owned(), tx.try_reserve()) {
                            (Ok(slot), Ok(permit)) => {
                                permit.send(ReceivedMessage::new(
                                    *message,
                                    tag,
                                    self.settle_tx.clone(),
                                    slot,
                                ));
                                return None;
                            }
                            (_, Err(TrySendError::Closed(()))) => Err(true),
                            _ => Err(false),
                        }
                    }
                    None => Err(true),
                };
                match fit {
                    Err(false) => Some(Inbound::CloudToDevice(message, tag)),
                    // No stream (any more): the message waits for the next one.
                    _ => {
                        self.c2d = None;
                        self.hold_c2d(message, tag);
                        None
                    }
                }
            }
            Inbound::Desired(patch) => match self.desired.as_ref().map(|tx| tx.try_send(patch)) {
                Some(Err(TrySendError::Full(patch))) => Some(Inbound::Desired(patch)),
                Some(Err(TrySendError::Closed(_))) => {
                    self.desired = None;
                    None
                }
                Some(Ok(())) | None => None,
            },
            Inbound::Method(request) => {
                match self.methods.as_ref().map(|tx| tx.try_send(request)) {
                    Some(Err(TrySendError::Full(request))) => Some(Inbound::Method(request)),
                    Some(Err(TrySendError::Closed(_))) => {
                        self.methods = None;
                        None
                    }
                    Some(Ok(())) | None => None,
                }
            }
        }
    }

    /// A future that ends when the stream the first stalled message waits for has room (or
    /// was dropped). `None` when nothing waits.
    fn room(&self) -> Option<Room> {
        fn wait<T: Send + 'static>(tx: &mpsc::Sender<T>) -> Room {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.reserve().await;
            })
        }
        let ready: Room = Box::pin(std::future::ready(()));
        Some(match self.stalled.front()? {
            Inbound::CloudToDevice(..) => match &self.c2d {
                Some(C2dSink::Completed(tx)) => wait(tx),
                Some(C2dSink::Settled(tx)) => wait(tx),
                None => ready,
            },
            Inbound::Desired(_) => self.desired.as_ref().map_or(ready, wait),
            Inbound::Method(_) => self.methods.as_ref().map_or(ready, wait),
        })
    }

    /// The supervisor's own twin GET answered: record the desired version, and after a
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
        if resync && self.desired.is_some() {
            self.inbound(Inbound::Desired(DesiredPatch {
                version,
                patch: desired,
            }));
        }
    }
}

#[cfg(test)]
mod tests;
