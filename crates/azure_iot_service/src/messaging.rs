//! Cloud-to-device messages and their delivery feedback over AMQP 1.0 (port 5671).
//!
//! One TLS connection and session carry three kinds of links:
//!
//! * `$cbs` request/answer links: the client puts a SAS token (`put-token`, answered with
//!   status 200) and puts a fresh one at 85 % of its life, from a background task, on the same
//!   links. No SASL layer is used, as in the Node SDK (the hub accepts that).
//! * a sender on `/messages/devicebound`: each message's `to` names the device; the hub settles
//!   it accepted (queued) or rejected with a condition we turn into an [`ErrorKind`].
//! * a receiver on `/messages/serviceBound/feedback`: batches of JSON feedback records,
//!   accepted once the caller has taken them, released (and so redelivered) otherwise.
//!
//! fe2o3-amqp's CBS helper insists on status 202 while IoT Hub answers 200, so put-token is
//! written here.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_iot_core::encoding::encode_component;
use bytes::Bytes;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use fe2o3_amqp_types::definitions::{AmqpError, ErrorCondition, LinkError};
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message, MessageId, Outcome, Properties,
};
use fe2o3_amqp_types::primitives::{SimpleValue, Timestamp, Value};
use futures_util::stream::BoxStream;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::credential::TokenSource;
use crate::error::{Error, ErrorKind, Result};

/// Which delivery outcomes of a cloud-to-device message produce a feedback record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FeedbackMode {
    /// No feedback (the default).
    #[default]
    None,
    /// When the device completes the message.
    Positive,
    /// When the message expires, exceeds its delivery count or is rejected or purged.
    Negative,
    /// Both.
    Full,
}

impl FeedbackMode {
    fn wire(self) -> &'static str {
        match self {
            FeedbackMode::None => "none",
            FeedbackMode::Positive => "positive",
            FeedbackMode::Negative => "negative",
            FeedbackMode::Full => "full",
        }
    }
}

/// How many feedback batches a receiver takes at once (each stays locked to it until settled).
const FEEDBACK_CREDIT: u32 = 4;

/// The largest cloud-to-device message body IoT Hub accepts.
pub const MAX_C2D_BODY: usize = 64 * 1024;

/// A cloud-to-device message.
///
/// ```
/// use std::time::Duration;
/// use azure_iot_service::{CloudToDeviceMessage, FeedbackMode};
///
/// let message = CloudToDeviceMessage::new("reboot")
///     .message_id("cmd-42")
///     .feedback(FeedbackMode::Full)
///     .time_to_live(Duration::from_secs(600))
///     .property("priority", "high");
/// ```
#[derive(Debug, Clone, Default)]
pub struct CloudToDeviceMessage {
    body: Bytes,
    message_id: Option<String>,
    correlation_id: Option<String>,
    user_id: Option<String>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    expiry: Option<SystemTime>,
    feedback: FeedbackMode,
    properties: Vec<(String, String)>,
}

impl CloudToDeviceMessage {
    /// A message with `body`.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            ..Self::default()
        }
    }

    /// The message id (a UUID is generated when none is set; feedback names it).
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// The correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// The user id.
    pub fn user_id(mut self, id: impl Into<String>) -> Self {
        self.user_id = Some(id.into());
        self
    }

    /// The body's content type (`application/json`).
    pub fn content_type(mut self, value: impl Into<String>) -> Self {
        self.content_type = Some(value.into());
        self
    }

    /// The body's content encoding (`utf-8`).
    pub fn content_encoding(mut self, value: impl Into<String>) -> Self {
        self.content_encoding = Some(value.into());
        self
    }

    /// When the message expires if the device has not completed it (the hub's default TTL
    /// applies otherwise).
    pub fn expiry_time(mut self, at: SystemTime) -> Self {
        self.expiry = Some(at);
        self
    }

    /// Expires `ttl` from now.
    pub fn time_to_live(self, ttl: Duration) -> Self {
        self.expiry_time(SystemTime::now() + ttl)
    }

    /// Which outcomes produce feedback.
    pub fn feedback(mut self, mode: FeedbackMode) -> Self {
        self.feedback = mode;
        self
    }

    /// Adds an application property, delivered to the device with the message.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((name.into(), value.into()));
        self
    }

    fn check(&self) -> Result<()> {
        if self.body.len() > MAX_C2D_BODY {
            return Err(Error::invalid(format!(
                "a cloud-to-device message body is at most {MAX_C2D_BODY} bytes, this one has {}",
                self.body.len()
            )));
        }
        if let Some((name, _)) = self
            .properties
            .iter()
            .find(|(n, _)| n.is_empty() || n.eq_ignore_ascii_case("iothub-ack") || !n.is_ascii())
        {
            return Err(Error::invalid(format!(
                "the property name {name:?} is not allowed (empty, reserved or not ASCII)"
            )));
        }
        Ok(())
    }

    fn to_amqp(&self, to: String, message_id: String) -> Message<Body<Value>> {
        let mut properties = Properties::builder().to(to).message_id(message_id);
        if let Some(id) = &self.correlation_id {
            properties = properties.correlation_id(id.clone());
        }
        if let Some(id) = &self.user_id {
            properties = properties.user_id(id.as_bytes().to_vec());
        }
        if let Some(value) = &self.content_type {
            properties = properties.content_type(value.as_str());
        }
        if let Some(value) = &self.content_encoding {
            properties = properties.content_encoding(value.as_str());
        }
        if let Some(at) = self.expiry {
            let millis = at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            properties = properties.absolute_expiry_time(Timestamp::from_milliseconds(millis));
        }
        let mut application = ApplicationProperties::builder();
        application = application.insert("iothub-ack", self.feedback.wire());
        for (name, value) in &self.properties {
            application = application.insert(name.clone(), value.clone());
        }
        Message::builder()
            .properties(properties.build())
            .application_properties(application.build())
            .body(Body::Data(vec![Data(self.body.to_vec().into())].into()))
            .build()
    }
}

/// Cloud-to-device messaging over AMQP, from [`ServiceClient::messaging`](crate::ServiceClient::messaging).
///
/// Share it (`Arc<Messaging>`) to send from many tasks: the connection carries
/// [`SENDER_LINKS`] sender links, so that many sends wait for the hub's settlement at once.
/// A send that finds the connection lost opens a new one first. A send whose link breaks
/// after the message was handed over fails with [`ErrorKind::Transport`] and is not repeated:
/// the hub may have queued it, and resending could deliver it twice. Feedback receivers keep
/// the connection they were attached on open for as long as they live.
pub struct Messaging {
    endpoint: Endpoint,
    /// The current connection's links; held only to find or replace them.
    link: Mutex<Option<Arc<Link>>>,
    closed: std::sync::atomic::AtomicBool,
}

/// How many C2D sender links a connection carries: each waits for one settlement at a time.
pub const SENDER_LINKS: usize = 4;

/// Where and how to open a connection.
struct Endpoint {
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    tokens: Arc<TokenSource>,
    timeout: Duration,
}

/// One open connection: its session and token renewal. Shared by the C2D sender and the
/// feedback receivers attached on it, so it closes when the last of them goes.
struct Conn {
    connection: Mutex<fe2o3_amqp::connection::ConnectionHandle<()>>,
    session: Mutex<SessionHandle<()>>,
    renewal: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// The C2D senders on a connection.
struct Link {
    conn: Arc<Conn>,
    senders: Vec<Mutex<Sender>>,
    /// Where the next send starts looking for a free sender.
    next: std::sync::atomic::AtomicUsize,
    /// Set when a send broke a link or the hub refused the token: replace the connection.
    broken: std::sync::atomic::AtomicBool,
}

impl Link {
    /// A free sender if there is one, else the next one in turn (waiting for it).
    async fn sender(&self) -> tokio::sync::MutexGuard<'_, Sender> {
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = self.senders.len();
        for i in 0..n {
            if let Ok(free) = self.senders[(start + i) % n].try_lock() {
                return free;
            }
        }
        self.senders[start % n].lock().await
    }

    async fn is_usable(&self) -> bool {
        !self.broken.load(std::sync::atomic::Ordering::Acquire)
            && !self.conn.connection.lock().await.is_closed()
    }

    fn mark_broken(&self) {
        self.broken
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messaging")
            .field("host", &self.endpoint.host)
            .field("port", &self.endpoint.port)
            .finish_non_exhaustive()
    }
}

fn transport(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Transport, what.to_owned(), e)
}

async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(limit, f).await.map_err(|_| {
        Error::new(
            ErrorKind::Timeout,
            format!("{what} took longer than {limit:?}"),
        )
    })?
}

impl Endpoint {
    /// TLS, AMQP open, session, CBS put-token, the C2D sender.
    async fn open(&self) -> Result<Link> {
        within(self.timeout, "opening the AMQP connection", async {
            let host = self.host.as_str();
            let server_name =
                rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
                    Error::with_source(ErrorKind::InvalidArgument, "the hub host name", e)
                })?;
            let tcp = tokio::net::TcpStream::connect((host, self.port))
                .await
                .map_err(|e| transport("could not connect to the hub's AMQP port", e))?;
            let _ = tcp.set_nodelay(true);
            let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(server_name, tcp)
                .await
                .map_err(|e| match crate::http::tls_failure(&e) {
                    Some(why) => Error::with_source(ErrorKind::Tls, why, e),
                    None => transport("TLS handshake with the hub's AMQP port failed", e),
                })?;
            let mut connection = Connection::builder()
                .container_id(format!("azure-iot-rs-{}", uuid::Uuid::new_v4()))
                .hostname(host)
                .open_with_stream(stream)
                .await
                .map_err(|e| transport("the AMQP connection was refused", e))?;
            let mut session = Session::begin(&mut connection)
                .await
                .map_err(|e| transport("the AMQP session was refused", e))?;
            let mut cbs = Cbs::attach(&mut session, host).await?;
            let due = due_instant(cbs.put(&self.tokens).await?);
            let mut senders = Vec::with_capacity(SENDER_LINKS);
            for i in 0..SENDER_LINKS {
                let sender = Sender::attach(
                    &mut session,
                    format!("c2d-sender-{i}"),
                    "/messages/devicebound",
                )
                .await
                .map_err(|e| transport("the hub refused the cloud-to-device link", e))?;
                senders.push(Mutex::new(sender));
            }
            let renewal = tokio::spawn(renew_forever(
                CbsRenewal {
                    cbs,
                    tokens: self.tokens.clone(),
                },
                due,
                self.timeout,
            ));
            Ok(Link {
                conn: Arc::new(Conn {
                    connection: Mutex::new(connection),
                    session: Mutex::new(session),
                    renewal,
                }),
                senders,
                next: std::sync::atomic::AtomicUsize::new(0),
                broken: std::sync::atomic::AtomicBool::new(false),
            })
        })
        .await
    }
}

impl Messaging {
    pub(crate) async fn open(
        host: &str,
        port: u16,
        tls: Arc<rustls::ClientConfig>,
        tokens: Arc<TokenSource>,
        timeout: Duration,
    ) -> Result<Self> {
        let endpoint = Endpoint {
            host: host.to_owned(),
            port,
            tls,
            tokens,
            timeout,
        };
        let link = endpoint.open().await?;
        Ok(Self {
            endpoint,
            link: Mutex::new(Some(Arc::new(link))),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The current links, reopened first if they were lost.
    async fn live(&self) -> Result<Arc<Link>> {
        let mut slot = self.link.lock().await;
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::Closed,
                "the messaging connection is closed",
            ));
        }
        if let Some(link) = slot.as_ref()
            && link.is_usable().await
        {
            return Ok(link.clone());
        }
        *slot = None;
        tracing::debug!(host = %self.endpoint.host, "opening the AMQP connection");
        let link = Arc::new(self.endpoint.open().await?);
        *slot = Some(link.clone());
        Ok(link)
    }

    /// Queues `message` for `device_id`. Returns once the hub has accepted it; fails with
    /// [`ErrorKind::NotFound`] for an unknown device and [`ErrorKind::QueueFull`] when the
    /// device already has 50 messages waiting. Returns the message id used.
    pub async fn send(&self, device_id: &str, message: CloudToDeviceMessage) -> Result<String> {
        azure_iot_protocol::identity::check_id(device_id).map_err(|e| {
            Error::with_source(ErrorKind::InvalidArgument, format!("device id: {e}"), e)
        })?;
        message.check()?;
        let message_id = message
            .message_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let to = format!(
            "/devices/{}/messages/devicebound",
            encode_component(device_id)
        );
        let link = self.live().await?;
        let amqp = message.to_amqp(to, message_id.clone());
        let mut sender = link.sender().await;
        let sent = tokio::time::timeout(self.endpoint.timeout, sender.send(amqp)).await;
        drop(sender);
        let outcome = match sent {
            Ok(Ok(outcome)) => outcome,
            // Refused before anything was sent: the link is fine.
            Ok(Err(e @ fe2o3_amqp::link::SendError::MessageSizeExceeded(_))) => {
                return Err(Error::with_source(
                    ErrorKind::InvalidArgument,
                    "the message is larger than the hub's link accepts",
                    e,
                ));
            }
            // The next send opens a new connection. This one is not repeated: the hub may
            // have queued it.
            Ok(Err(e)) => {
                link.mark_broken();
                return Err(transport(
                    "the cloud-to-device link broke; the message may or may not have been queued",
                    e,
                ));
            }
            Err(_) => {
                link.mark_broken();
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the hub did not settle the message within {:?}; it may or may not have been queued",
                        self.endpoint.timeout
                    ),
                ));
            }
        };
        match outcome {
            Outcome::Accepted(_) => Ok(message_id),
            Outcome::Rejected(rejected) => {
                let error = rejection(device_id, rejected.error);
                if error.kind() == ErrorKind::Unauthorized {
                    // The connection's token is not (or no longer) good: the next send opens
                    // a new connection and puts a fresh one.
                    link.mark_broken();
                }
                Err(error)
            }
            other => Err(Error::new(
                ErrorKind::Protocol,
                format!("the hub settled the message with {other:?}"),
            )),
        }
    }

    /// Attaches a receiver of delivery feedback. Only one receiver should be open per hub:
    /// the hub hands each batch to one of them. If the connection is lost, the receiver ends
    /// with an error; attach a new one.
    pub async fn feedback(&self) -> Result<FeedbackReceiver> {
        let conn = self.live().await?.conn.clone();
        let receiver = within(
            self.endpoint.timeout,
            "attaching the feedback link",
            async {
                let mut session = conn.session.lock().await;
                // A few batches at a time: each one the hub hands over stays locked to this
                // receiver until it is settled.
                Receiver::builder()
                    .name(format!("feedback-{}", uuid::Uuid::new_v4()))
                    .source("/messages/serviceBound/feedback")
                    .credit_mode(fe2o3_amqp::link::CreditMode::Auto(FEEDBACK_CREDIT))
                    .attach(&mut *session)
                    .await
                    .map_err(|e| transport("the hub refused the feedback link", e))
            },
        )
        .await?;
        Ok(FeedbackReceiver {
            receiver,
            _conn: conn,
        })
    }

    /// Whether the connection is open and usable now (a send would reopen a lost one).
    pub async fn is_connected(&self) -> bool {
        let current = self.link.lock().await.clone();
        match current {
            Some(link) => link.is_usable().await,
            None => false,
        }
    }

    /// Closes the current connection and its links, including the feedback receivers attached
    /// on it; later sends fail with [`ErrorKind::Closed`]. A receiver attached on an earlier
    /// connection (one replaced after it was lost) keeps that connection until it is dropped.
    pub async fn close(&self) -> Result<()> {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        let Some(link) = self.link.lock().await.take() else {
            return Ok(());
        };
        link.conn.renewal.abort();
        // Ending the session detaches its links, this connection's feedback receivers' too.
        let _ = link.conn.session.lock().await.end().await;
        link.conn
            .connection
            .lock()
            .await
            .close()
            .await
            .map_err(|e| transport("closing the AMQP connection", e))
    }
}

fn rejection(device_id: &str, error: Option<fe2o3_amqp_types::definitions::Error>) -> Error {
    let description = error
        .as_ref()
        .and_then(|e| e.description.clone())
        .unwrap_or_default();
    let kind = match error.as_ref().map(|e| &e.condition) {
        Some(ErrorCondition::AmqpError(AmqpError::NotFound)) => ErrorKind::NotFound,
        Some(ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess)) => ErrorKind::Unauthorized,
        Some(ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded)) => ErrorKind::QueueFull,
        Some(ErrorCondition::LinkError(LinkError::MessageSizeExceeded)) => {
            ErrorKind::InvalidArgument
        }
        Some(ErrorCondition::Custom(symbol)) if symbol.as_str().contains("throttled") => {
            ErrorKind::Throttled
        }
        Some(ErrorCondition::Custom(symbol)) if symbol.as_str().contains("argument") => {
            ErrorKind::BadRequest
        }
        _ => ErrorKind::ServiceError,
    };
    Error::new(
        kind,
        format!("the hub rejected the cloud-to-device message for {device_id}: {description}"),
    )
}

/// The `$cbs` links of a connection, kept for its whole life so renewals reuse them.
struct Cbs {
    requests: Sender,
    answers: Receiver,
    audience: String,
    next_id: u64,
}

impl Cbs {
    async fn attach(session: &mut SessionHandle<()>, host: &str) -> Result<Self> {
        Ok(Self {
            requests: Sender::attach(session, "cbs-requests", "$cbs")
                .await
                .map_err(|e| transport("the hub refused the $cbs sender link", e))?,
            answers: Receiver::attach(session, "cbs-answers", "$cbs")
                .await
                .map_err(|e| transport("the hub refused the $cbs receiver link", e))?,
            audience: host.to_owned(),
            next_id: 0,
        })
    }

    /// Puts a token; returns when the next one is due.
    async fn put(&mut self, tokens: &TokenSource) -> Result<SystemTime> {
        let (token, renew_at) = tokens.token();
        self.next_id += 1;
        let id = format!("put-token-{}", self.next_id);
        let request = Message::builder()
            .properties(
                Properties::builder()
                    .message_id(id.clone())
                    .reply_to("cbs")
                    .to("$cbs")
                    .build(),
            )
            .application_properties(
                ApplicationProperties::builder()
                    .insert("operation", "put-token")
                    .insert("type", "servicebus.windows.net:sastoken")
                    .insert("name", self.audience.as_str())
                    .build(),
            )
            .body(Body::Value(AmqpValue(Value::String(
                token.secret().to_owned(),
            ))))
            .build();
        self.requests
            .send(request)
            .await
            .map_err(|e| transport("sending the CBS token failed", e))?;
        loop {
            let answer = self
                .answers
                .recv::<Body<Value>>()
                .await
                .map_err(|e| transport("the CBS answer link broke", e))?;
            let _ = self.answers.accept(&answer).await;
            let message = answer.into_message();
            let correlates = message
                .properties
                .as_ref()
                .and_then(|p| p.correlation_id.as_ref())
                .is_some_and(|c| *c == MessageId::String(id.clone()));
            if !correlates {
                continue; // an answer to an earlier, abandoned request
            }
            let props = message.application_properties.as_ref();
            let status = props
                .and_then(|p| p.get("status-code"))
                .and_then(|v| match v {
                    SimpleValue::Int(code) => Some(i64::from(*code)),
                    SimpleValue::Long(code) => Some(*code),
                    SimpleValue::Uint(code) => Some(i64::from(*code)),
                    _ => None,
                });
            let description = props
                .and_then(|p| p.get("status-description"))
                .and_then(|v| match v {
                    SimpleValue::String(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            return match status {
                Some(200 | 202) => Ok(renew_at),
                Some(401 | 403) => Err(Error::new(
                    ErrorKind::Unauthorized,
                    format!(
                        "the hub refused the token of policy {}: {description}",
                        tokens.policy_name()
                    ),
                )),
                other => Err(Error::new(
                    ErrorKind::Protocol,
                    format!("the hub answered put-token with status {other:?}: {description}"),
                )),
            };
        }
    }
}

/// How long a failed renewal waits before the next try.
const RENEWAL_RETRY: Duration = Duration::from_secs(30);

/// A token renewal's wall-clock due time on tokio's clock (a time already past is now).
fn due_instant(at: SystemTime) -> Instant {
    Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()
}

/// Puts a fresh token on a connection; says when the next one is due.
trait PutToken: Send {
    fn put_token(&mut self) -> impl Future<Output = Result<Instant>> + Send;
}

/// The `$cbs` links and the tokens to put on them.
struct CbsRenewal {
    cbs: Cbs,
    tokens: Arc<TokenSource>,
}

impl PutToken for CbsRenewal {
    async fn put_token(&mut self) -> Result<Instant> {
        self.cbs.put(&self.tokens).await.map(due_instant)
    }
}

/// Puts a fresh token whenever one is due, until the connection goes. A put that fails (or
/// takes longer than `limit`) for another reason is tried again after [`RENEWAL_RETRY`].
async fn renew_forever(mut put: impl PutToken, mut due: Instant, limit: Duration) {
    loop {
        tokio::time::sleep_until(due).await;
        match within(limit, "renewing the CBS token", put.put_token()).await {
            Ok(next) => due = next,
            Err(e) if e.kind() == ErrorKind::Transport => {
                tracing::debug!(error = %e, "CBS renewal stopped: the connection is gone");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "CBS token renewal failed; trying again in 30 s");
                due = Instant::now() + RENEWAL_RETRY;
            }
        }
    }
}

/// The outcome of one cloud-to-device message, as the hub reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct FeedbackRecord {
    /// The message id of the cloud-to-device message (empty if it had none).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub original_message_id: String,
    /// The target device.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub device_id: String,
    /// The device's generation id.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub device_generation_id: String,
    /// What happened.
    #[serde(default, deserialize_with = "status_or_unknown")]
    pub status_code: FeedbackStatus,
    /// The hub's description.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub description: String,
    /// When the outcome happened (ISO 8601).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub enqueued_time_utc: String,
}

/// A string member that may be `null` (a message sent without an id): read as empty, so one
/// odd record does not make its whole batch unreadable.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// A status that may be `null` or missing: [`FeedbackStatus::Unknown`].
fn status_or_unknown<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<FeedbackStatus, D::Error> {
    Ok(Option::<FeedbackStatus>::deserialize(d)?.unwrap_or(FeedbackStatus::Unknown))
}

/// What happened to a cloud-to-device message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub enum FeedbackStatus {
    /// The device completed it.
    Success,
    /// It expired before the device completed it.
    Expired,
    /// It was delivered too many times without completion.
    DeliveryCountExceeded,
    /// The device rejected it.
    Rejected,
    /// The queue was purged.
    Purged,
    /// A status this client does not know (or none).
    #[serde(other)]
    #[default]
    Unknown,
}

/// A batch of feedback records, one AMQP message. Settle it with
/// [`FeedbackReceiver::complete`] or [`FeedbackReceiver::abandon`].
#[derive(Debug)]
pub struct FeedbackBatch {
    /// The records.
    pub records: Vec<FeedbackRecord>,
    delivery: DeliveryInfo,
}

/// Receives delivery feedback, from [`Messaging::feedback`].
pub struct FeedbackReceiver {
    receiver: Receiver,
    /// Keeps the connection open while the receiver lives.
    _conn: Arc<Conn>,
}

impl std::fmt::Debug for FeedbackReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedbackReceiver").finish_non_exhaustive()
    }
}

impl FeedbackReceiver {
    /// The next batch; waits until the hub has one. The batch stays locked to this receiver
    /// until it is completed or abandoned (or the link closes, which releases it).
    pub async fn next_batch(&mut self) -> Result<FeedbackBatch> {
        let delivery = self
            .receiver
            .recv::<Body<Value>>()
            .await
            .map_err(|e| transport("the feedback link broke", e))?;
        let info = DeliveryInfo::from(&delivery);
        let body: Vec<u8> = match &delivery.message().body {
            Body::Data(sections) => sections.iter().flat_map(|d| d.0.iter().copied()).collect(),
            Body::Value(AmqpValue(Value::String(text))) => text.clone().into_bytes(),
            Body::Value(AmqpValue(Value::Binary(bytes))) => bytes.to_vec(),
            _ => Vec::new(),
        };
        match serde_json::from_slice::<Vec<FeedbackRecord>>(&body) {
            Ok(records) => Ok(FeedbackBatch {
                records,
                delivery: info,
            }),
            Err(e) => {
                // Unreadable: reject it so it is not redelivered forever.
                let _ = self.receiver.reject(info, None).await;
                Err(Error::with_source(
                    ErrorKind::Protocol,
                    "a feedback message is not a JSON array of feedback records",
                    e,
                ))
            }
        }
    }

    /// Completes a batch: the hub forgets it.
    pub async fn complete(&self, batch: FeedbackBatch) -> Result<()> {
        self.receiver
            .accept(batch.delivery)
            .await
            .map_err(|e| transport("completing the feedback batch failed", e))
    }

    /// Gives a batch back: the hub delivers it again.
    pub async fn abandon(&self, batch: FeedbackBatch) -> Result<()> {
        self.receiver
            .release(batch.delivery)
            .await
            .map_err(|e| transport("abandoning the feedback batch failed", e))
    }

    /// Every record, batch after batch. A batch is completed when the caller asks for the
    /// record after its last one: a caller that stops (or fails) before that leaves the batch
    /// to be delivered again, records it already had included. Feedback is at least once; to
    /// settle batches exactly when you choose, use [`next_batch`](Self::next_batch).
    pub fn into_stream(self) -> BoxStream<'static, Result<FeedbackRecord>> {
        Box::pin(futures_util::stream::try_unfold(
            (
                self,
                VecDeque::<FeedbackRecord>::new(),
                None::<DeliveryInfo>,
            ),
            |(mut this, mut buffered, mut handed)| async move {
                loop {
                    if let Some(record) = buffered.pop_front() {
                        return Ok(Some((record, (this, buffered, handed))));
                    }
                    if let Some(done) = handed.take() {
                        this.receiver
                            .accept(done)
                            .await
                            .map_err(|e| transport("completing the feedback batch failed", e))?;
                    }
                    let batch = this.next_batch().await?;
                    if batch.records.is_empty() {
                        this.complete(batch).await?;
                        continue;
                    }
                    handed = Some(batch.delivery);
                    buffered.extend(batch.records);
                }
            },
        ))
    }

    /// Detaches the link; a batch not completed is released.
    pub async fn close(self) -> Result<()> {
        self.receiver
            .close()
            .await
            .map_err(|e| transport("closing the feedback link", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_records_parse_with_unknown_statuses() {
        let body = br#"[{"originalMessageId":"m1","deviceId":"d1","deviceGenerationId":"g","statusCode":"Success","description":"Success","enqueuedTimeUtc":"2026-01-01T00:00:00Z"},
                        {"originalMessageId":"m2","deviceId":"d1","statusCode":"SomethingNew"},
                        {"originalMessageId":null,"deviceId":"d1","statusCode":null,"description":null,"deviceGenerationId":null,"enqueuedTimeUtc":null}]"#;
        let records: Vec<FeedbackRecord> = serde_json::from_slice(body).unwrap();
        assert_eq!(records[0].status_code, FeedbackStatus::Success);
        assert_eq!(records[1].status_code, FeedbackStatus::Unknown);
        assert_eq!(records[2].status_code, FeedbackStatus::Unknown);
        assert_eq!(records[2].original_message_id, "");
    }

    /// A renewal that records when it is called and answers from a script.
    struct Scripted {
        calls: Vec<Instant>,
        answers: VecDeque<Option<Result<Duration>>>,
    }

    impl PutToken for &mut Scripted {
        fn put_token(&mut self) -> impl Future<Output = Result<Instant>> + Send {
            let now = Instant::now();
            self.calls.push(now);
            let answer = self.answers.pop_front().flatten();
            async move {
                match answer {
                    Some(answer) => answer.map(|next| now + next),
                    // No answer: the hub never replies.
                    None => std::future::pending().await,
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_put_when_due_and_again_after_failures() {
        let start = Instant::now();
        let mut script = Scripted {
            calls: Vec::new(),
            answers: VecDeque::from([
                Some(Ok(Duration::from_secs(100))),
                Some(Err(Error::new(ErrorKind::Unauthorized, "refused"))),
                None, // hangs: cut off by the 5 s limit
                Some(Ok(Duration::from_secs(50))),
                Some(Err(Error::new(ErrorKind::Transport, "gone"))),
            ]),
        };
        renew_forever(
            &mut script,
            start + Duration::from_secs(10),
            Duration::from_secs(5),
        )
        .await;
        let at: Vec<u64> = script
            .calls
            .iter()
            .map(|t| t.duration_since(start).as_secs())
            .collect();
        // Due at 10; next due 100 s later; refused → 30 s later; hangs 5 s → 30 s later;
        // then 50 s later the connection is gone and renewal stops.
        assert_eq!(at, [10, 110, 140, 175, 225]);
    }

    proptest::proptest! {
        #[test]
        fn any_feedback_body_is_read_without_panicking(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = serde_json::from_slice::<Vec<FeedbackRecord>>(&body);
        }
    }

    #[test]
    fn messages_are_checked_and_carry_their_properties() {
        let too_big = CloudToDeviceMessage::new(vec![0u8; MAX_C2D_BODY + 1]);
        assert_eq!(
            too_big.check().unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let reserved = CloudToDeviceMessage::new("x").property("iothub-ack", "full");
        assert!(reserved.check().is_err());
        let amqp = CloudToDeviceMessage::new("x")
            .feedback(FeedbackMode::Full)
            .correlation_id("c")
            .property("k", "v")
            .to_amqp("/devices/d/messages/devicebound".into(), "m".into());
        let app = amqp.application_properties.unwrap();
        assert_eq!(
            app.get("iothub-ack"),
            Some(&SimpleValue::String("full".into()))
        );
        assert_eq!(app.get("k"), Some(&SimpleValue::String("v".into())));
        let props = amqp.properties.unwrap();
        assert_eq!(props.message_id, Some(MessageId::String("m".into())));
        assert_eq!(props.correlation_id, Some(MessageId::String("c".into())));
    }
}
