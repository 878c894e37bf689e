//! One AMQP connection to the hub, shared by the devices seated on it: the connection handle
//! (to begin each device's session) and the connection's CBS task (put-token for any
//! device's audience, answers matched by correlation id).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use azure_iot_protocol::amqp::{Address, PutToken, PutTokenAnswer};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::session::{BeginError, SessionHandle};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use fe2o3_amqp_types::definitions::SenderSettleMode;
use fe2o3_amqp_types::messaging::{Body, MessageId};
use fe2o3_amqp_types::primitives::Value;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind, Result};
use crate::transport::Dial;

/// Put-token requests a connection's CBS task may have waiting.
const CBS_QUEUE: usize = 64;

/// Put-token requests sent and not yet answered, at most. Devices joining a connection at
/// once all put their tokens at once; sending them all before reading answers filled the
/// hub's answer queue (the emulator closes `$cbs` after 32 answers wait for link credit).
const CBS_IN_FLIGHT: usize = 16;

/// How long the hub may take to answer a put-token. One unanswered past this means the
/// connection's CBS node is not working: the connection is given up (its devices reconnect
/// on a new one) rather than left holding requests that never end.
const CBS_ANSWER_LIMIT: Duration = Duration::from_secs(60);

/// The largest frame the client offers to take (IoT Hub's own maximum is 64 KiB for devices;
/// messages larger than a frame are split over several transfers).
const MAX_FRAME: u32 = 64 * 1024;

/// The highest channel the client offers: a session per device plus the CBS session, so that
/// a connection can carry [`MAX_DEVICES_PER_CONNECTION`](super::MAX_DEVICES_PER_CONNECTION)
/// devices (the AMQP library's default, 255, stopped a connection at 255 devices).
const CHANNEL_MAX: u16 = super::MAX_DEVICES_PER_CONNECTION as u16;

/// How long closing a connection may take before its socket is simply dropped.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// A put-token request for the CBS task.
struct PutRequest {
    audience: String,
    token: String,
    answer: oneshot::Sender<Result<()>>,
}

/// An open AMQP connection and what the devices on it share.
pub(crate) struct SharedConnection {
    /// Held while beginning a session or closing.
    handle: Mutex<ConnectionHandle<()>>,
    /// The CBS task's requests.
    cbs: mpsc::Sender<PutRequest>,
    cbs_task: JoinHandle<()>,
    /// Devices seated on the connection.
    seated: AtomicUsize,
    /// Set once the connection failed: no new device is seated on it.
    broken: AtomicBool,
    /// Set once a session could not begin for want of a channel (the hub offered fewer than
    /// [`CHANNEL_MAX`]): no new device is seated on it, those seated stay.
    full: AtomicBool,
    /// Whether it carries one X.509 device (authenticated by the TLS client certificate).
    pub(crate) private: bool,
}

impl Drop for SharedConnection {
    fn drop(&mut self) {
        self.cbs_task.abort();
    }
}

impl std::fmt::Debug for SharedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConnection")
            .field("seated", &self.seated.load(Ordering::Relaxed))
            .field("broken", &self.broken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A transport failure while doing `what`.
pub(crate) fn failed(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Connect, what.to_owned(), e)
}

impl SharedConnection {
    /// Opens a connection as `dial` says: TLS (or a WebSocket), AMQP open without SASL, as
    /// the Node and C# SDKs do (the hub then authenticates each device by CBS, or the TLS
    /// client certificate), and the `$cbs` links on a session of their own.
    pub(crate) async fn open(dial: &Dial, private: bool) -> Result<Arc<Self>> {
        let stream = dial.connect().await?;
        let container = format!("azure-iot-rs-{}", uuid::Uuid::new_v4());
        let mut handle = Connection::builder()
            .container_id(container)
            .hostname(dial.host.as_str())
            .max_frame_size(MAX_FRAME)
            .channel_max(CHANNEL_MAX)
            .open_with_stream(crate::transport::Stream(stream))
            .await
            .map_err(|e| failed("the hub refused the AMQP connection", e))?;
        let (cbs, requests) = mpsc::channel(CBS_QUEUE);
        let cbs_task = if private {
            // An X.509 device has no token to put: nothing serves `$cbs` requests, and a
            // request (which cannot happen) fails at once.
            drop(requests);
            tokio::spawn(async {})
        } else {
            let mut session = Session::begin(&mut handle)
                .await
                .map_err(|e| failed("the hub refused the CBS session", e))?;
            let links = Cbs::attach(&mut session).await?;
            tokio::spawn(links.serve(session, requests))
        };
        Ok(Arc::new(Self {
            handle: Mutex::new(handle),
            cbs,
            cbs_task,
            seated: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
            full: AtomicBool::new(false),
            private,
        }))
    }

    /// Begins a session on the connection (for one device). `Ok(None)`: the connection has
    /// no channel left (it is marked full; the device belongs on another connection).
    pub(crate) async fn begin_session(&self) -> Result<Option<SessionHandle<()>>> {
        let mut handle = self.handle.lock().await;
        match Session::begin(&mut handle).await {
            Ok(session) => Ok(Some(session)),
            Err(BeginError::LocalChannelMaxReached) => {
                self.full.store(true, Ordering::Release);
                Ok(None)
            }
            Err(e) => {
                self.mark_broken();
                Err(failed("the hub refused a new AMQP session", e))
            }
        }
    }

    /// Puts `token` for `audience` on the connection's `$cbs` node; `Ok` once the hub
    /// accepted it.
    pub(crate) async fn put_token(&self, audience: &str, token: &str) -> Result<()> {
        let (answer, answered) = oneshot::channel();
        let request = PutRequest {
            audience: audience.to_owned(),
            token: token.to_owned(),
            answer,
        };
        let gone = || {
            Error::new(
                ErrorKind::Disconnected,
                "the AMQP connection's CBS links are gone",
            )
        };
        self.cbs.send(request).await.map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }

    /// Whether another device may be seated here (the connection works and has room).
    pub(crate) fn has_room(&self, max_devices: usize) -> bool {
        !self.private
            && !self.full.load(Ordering::Acquire)
            && !self.is_broken()
            && self.seated.load(Ordering::Acquire) < max_devices
    }

    /// Whether the connection failed or closed.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
            || self.cbs.is_closed()
            || self
                .handle
                .try_lock()
                .is_ok_and(|handle| handle.is_closed())
    }

    /// Marks the connection failed: no device is seated on it any more.
    pub(crate) fn mark_broken(&self) {
        self.broken.store(true, Ordering::Release);
    }

    /// Devices seated now.
    pub(crate) fn seated(&self) -> usize {
        self.seated.load(Ordering::Acquire)
    }

    /// Takes a seat (the caller checked [`has_room`](Self::has_room) under the pool's lock).
    pub(crate) fn seat(self: &Arc<Self>) -> Seat {
        self.seated.fetch_add(1, Ordering::AcqRel);
        Seat(self.clone())
    }

    /// Closes the connection (within a bound).
    async fn close(&self) {
        let mut handle = self.handle.lock().await;
        let _ = tokio::time::timeout(CLOSE_LIMIT, handle.close()).await;
    }
}

/// A device's place on a shared connection; leaving (dropping it) frees the place, and the
/// connection closes when its last device has left.
#[derive(Debug)]
pub(crate) struct Seat(Arc<SharedConnection>);

impl Seat {
    /// The connection.
    pub(crate) fn connection(&self) -> &SharedConnection {
        &self.0
    }

    /// Leaves the connection, closing it cleanly if this was its last device.
    pub(crate) async fn leave(self) {
        if self.0.seated.load(Ordering::Acquire) == 1 {
            self.0.close().await;
        }
        drop(self);
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.seated.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's `$cbs` links.
struct Cbs {
    requests: Sender,
    answers: Receiver,
}

impl Cbs {
    async fn attach(session: &mut SessionHandle<()>) -> Result<Self> {
        let address = Address::Cbs.to_string();
        Ok(Self {
            // Requests go pre-settled: the hub's answer on the other link is what counts.
            requests: Sender::builder()
                .name("cbs-sender")
                .target(address.as_str())
                .sender_settle_mode(SenderSettleMode::Settled)
                .attach(session)
                .await
                .map_err(|e| failed("the hub refused the $cbs sender link", e))?,
            answers: Receiver::attach(session, "cbs-receiver", address.as_str())
                .await
                .map_err(|e| failed("the hub refused the $cbs receiver link", e))?,
        })
    }

    /// Serves put-token requests until the links or the requesters are gone; requests
    /// waiting then fail (their senders are dropped).
    async fn serve(mut self, session: SessionHandle<()>, mut requests: mpsc::Receiver<PutRequest>) {
        let mut waiting: HashMap<MessageId, (tokio::time::Instant, oneshot::Sender<Result<()>>)> =
            HashMap::new();
        let mut next_id: u64 = 0;
        loop {
            // Requesters that went away free their place.
            waiting.retain(|_, (_, answer)| !answer.is_closed());
            let oldest = waiting.values().map(|(deadline, _)| *deadline).min();
            tokio::select! {
                () = async {
                    match oldest {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::debug!("the hub did not answer a put-token in time; giving up the connection");
                    for (_, (_, answer)) in waiting.drain() {
                        let _ = answer.send(Err(Error::new(
                            ErrorKind::Timeout,
                            format!("the hub did not answer the token within {CBS_ANSWER_LIMIT:?}"),
                        )));
                    }
                    break;
                }
                request = requests.recv(), if waiting.len() < CBS_IN_FLIGHT => {
                    let Some(request) = request else { break };
                    next_id += 1;
                    let id = MessageId::String(format!("put-token-{next_id}"));
                    let message = PutToken::new(request.audience.as_str(), request.token.as_str(), id.clone())
                        .to_message();
                    if let Err(e) = self.requests.send(message).await {
                        let _ = request.answer.send(Err(failed("sending a CBS token failed", e)));
                        break;
                    }
                    waiting.insert(id, (tokio::time::Instant::now() + CBS_ANSWER_LIMIT, request.answer));
                }
                answer = self.answers.recv::<Body<Value>>() => {
                    let Ok(answer) = answer else { break };
                    let _ = self.answers.accept(&answer).await;
                    let message = answer.into_message();
                    let Some(id) = message.properties.as_ref().and_then(|p| p.correlation_id.clone()) else {
                        continue;
                    };
                    if let Some((_, waiter)) = waiting.remove(&id) {
                        let _ = waiter.send(judge(&message));
                    }
                }
            }
        }
        drop(session);
    }
}

/// The hub's answer to a put-token, as a result.
fn judge(message: &azure_iot_protocol::amqp::AmqpMessage) -> Result<()> {
    let answer = PutTokenAnswer::parse(message).map_err(|e| {
        Error::with_source(ErrorKind::Protocol, "the hub's CBS answer is unreadable", e)
    })?;
    if answer.is_success() {
        return Ok(());
    }
    let description = &answer.description;
    Err(match answer.status_code {
        401 | 403 | 404 => Error::new(
            ErrorKind::Unauthorized,
            format!(
                "the hub refused the token ({}): {description}",
                answer.status_code
            ),
        ),
        other => Error::new(
            ErrorKind::Refused,
            format!("the hub answered put-token with status {other}: {description}"),
        ),
    })
}
