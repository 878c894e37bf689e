//! One AMQP connection to the hub and what lives on it: TLS, the session, CBS put-token (the
//! protocol crate's request and answer, so the emulator reads exactly what we write) with its
//! renewal task, and the C2D sender links.
//!
//! No SASL layer is used, as in the Node SDK (the hub accepts that): the connection is
//! authenticated by putting a SAS token on `$cbs`, answered with status 200 (fe2o3-amqp's
//! own CBS helper insists on 202, so put-token is not delegated to it), and a fresh token is
//! put at 85 % of the last one's life, from a background task, on the same links.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use azure_iot_protocol::amqp::{Address, PutToken, PutTokenAnswer};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use fe2o3_amqp_types::messaging::{Body, MessageId};
use fe2o3_amqp_types::primitives::Value;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::credential::TokenSource;
use crate::error::{Error, ErrorKind, Result};

/// How many C2D sender links a connection carries: each waits for one settlement at a time.
pub const SENDER_LINKS: usize = 4;

/// How long a failed renewal waits before the next try.
const RENEWAL_RETRY: Duration = Duration::from_secs(30);

/// Where and how to open a connection.
pub(super) struct Endpoint {
    /// The hub's host name (TLS name, AMQP hostname and CBS audience).
    pub(super) host: String,
    /// The AMQP port.
    pub(super) port: u16,
    /// The client's TLS configuration.
    pub(super) tls: Arc<rustls::ClientConfig>,
    /// Where tokens come from.
    pub(super) tokens: Arc<TokenSource>,
    /// The limit for opening, each put-token and each send's settlement.
    pub(super) timeout: Duration,
}

/// One open connection: its session and token renewal. Shared by the C2D senders and the
/// feedback receivers attached on it, so it closes when the last of them goes.
pub(super) struct Conn {
    /// Held only while closing (or checking whether it is closed).
    pub(super) connection: Mutex<ConnectionHandle<()>>,
    /// Held while attaching a link or ending the session.
    pub(super) session: Mutex<SessionHandle<()>>,
    /// The CBS renewal task; aborted with the connection.
    pub(super) renewal: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// The C2D senders on a connection.
pub(super) struct Link {
    /// The connection they are on.
    pub(super) conn: Arc<Conn>,
    senders: Vec<Mutex<Sender>>,
    /// Where the next send starts looking for a free sender.
    next: AtomicUsize,
    /// Set when a send broke a link or the hub refused the token: replace the connection.
    broken: AtomicBool,
}

impl Link {
    /// A free sender if there is one, else the next one in turn (waiting for it).
    pub(super) async fn sender(&self) -> tokio::sync::MutexGuard<'_, Sender> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.senders.len();
        for i in 0..n {
            if let Ok(free) = self.senders[(start + i) % n].try_lock() {
                return free;
            }
        }
        self.senders[start % n].lock().await
    }

    /// Whether sends may use these links. Never waits: a connection being closed (its lock
    /// held by `close`) counts as unusable.
    pub(super) fn is_usable(&self) -> bool {
        !self.broken.load(Ordering::Acquire)
            && self
                .conn
                .connection
                .try_lock()
                .is_ok_and(|connection| !connection.is_closed())
    }

    /// Marks the links unusable: the next send opens a new connection.
    pub(super) fn mark_broken(&self) {
        self.broken.store(true, Ordering::Release);
    }
}

/// A transport failure with `what` happened.
pub(crate) fn transport(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Transport, what.to_owned(), e)
}

/// Runs `f`, failing with [`ErrorKind::Timeout`] after `limit`.
pub(crate) async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, f).await.map_err(|_| {
        Error::new(
            ErrorKind::Timeout,
            format!("{what} took longer than {limit:?}"),
        )
    })?
}

impl Endpoint {
    /// TLS, AMQP open, session, CBS put-token, the C2D senders.
    pub(super) async fn open(&self) -> Result<Link> {
        within(self.timeout, "opening the AMQP connection", async {
            let host = self.host.as_str();
            let CbsSession {
                connection,
                mut session,
                renewal,
            } = open_cbs_session(
                self.host.as_str(),
                self.port,
                &self.tls,
                self.tokens.clone(),
                host,
                self.timeout,
            )
            .await?;
            let mut senders = Vec::with_capacity(SENDER_LINKS);
            for i in 0..SENDER_LINKS {
                let sender = Sender::attach(
                    &mut session,
                    format!("c2d-sender-{i}"),
                    Address::ServiceDeviceBound.to_string(),
                )
                .await
                .map_err(|e| transport("the hub refused the cloud-to-device link", e))?;
                senders.push(Mutex::new(sender));
            }
            Ok(Link {
                conn: Arc::new(Conn {
                    connection: Mutex::new(connection),
                    session: Mutex::new(session),
                    renewal,
                }),
                senders,
                next: AtomicUsize::new(0),
                broken: AtomicBool::new(false),
            })
        })
        .await
    }
}

/// TLS to `host:port` with `tls`, then the AMQP open (with `sasl`, if given; none is what the
/// Node SDK does and what CBS-authenticated connections need). The caller bounds the time.
pub(crate) async fn open_connection(
    host: &str,
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    sasl: Option<fe2o3_amqp::sasl_profile::SaslProfile>,
) -> Result<ConnectionHandle<()>> {
    let server_name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, "the host name", e))?;
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| transport(&format!("could not connect to {host}:{port}"), e))?;
    let _ = tcp.set_nodelay(true);
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| match crate::http::tls_failure(&e) {
            Some(why) => Error::with_source(ErrorKind::Tls, why, e),
            None => transport(&format!("TLS handshake with {host}:{port} failed"), e),
        })?;
    let builder = Connection::builder()
        .container_id(format!("azure-iot-rs-{}", uuid::Uuid::new_v4()))
        .hostname(host);
    let opened = match sasl {
        Some(profile) => builder.sasl_profile(profile).open_with_stream(stream).await,
        None => builder.open_with_stream(stream).await,
    };
    opened.map_err(|e| match e {
        fe2o3_amqp::connection::OpenError::SaslError { .. } => Error::with_source(
            ErrorKind::Unauthorized,
            format!("{host} refused the SASL credentials"),
            e,
        ),
        e => transport("the AMQP connection was refused", e),
    })
}

/// A connection and session authenticated by a CBS token that a background task renews.
pub(crate) struct CbsSession {
    /// The connection.
    pub(crate) connection: ConnectionHandle<()>,
    /// Its session.
    pub(crate) session: SessionHandle<()>,
    /// The renewal task (abort it when the connection goes).
    pub(crate) renewal: JoinHandle<()>,
}

/// [`open_connection`] without SASL, a session, and a token from `tokens` put on `$cbs` for
/// `audience` (renewed at 85 % of its life). The caller bounds the time.
pub(crate) async fn open_cbs_session(
    host: &str,
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    tokens: Arc<TokenSource>,
    audience: &str,
    timeout: Duration,
) -> Result<CbsSession> {
    let mut connection = open_connection(host, port, tls, None).await?;
    let mut session = Session::begin(&mut connection)
        .await
        .map_err(|e| transport("the AMQP session was refused", e))?;
    let mut cbs = Cbs::attach(&mut session, audience).await?;
    let due = due_instant(cbs.put(&tokens).await?);
    let renewal = tokio::spawn(renew_forever(CbsRenewal { cbs, tokens }, due, timeout));
    Ok(CbsSession {
        connection,
        session,
        renewal,
    })
}

/// The `$cbs` links of a connection, kept for its whole life so renewals reuse them.
struct Cbs {
    requests: Sender,
    answers: Receiver,
    audience: String,
    next_id: u64,
}

impl Cbs {
    async fn attach(session: &mut SessionHandle<()>, audience: &str) -> Result<Self> {
        let cbs = Address::Cbs.to_string();
        Ok(Self {
            requests: Sender::attach(session, "cbs-requests", cbs.as_str())
                .await
                .map_err(|e| transport("the hub refused the $cbs sender link", e))?,
            answers: Receiver::attach(session, "cbs-answers", cbs.as_str())
                .await
                .map_err(|e| transport("the hub refused the $cbs receiver link", e))?,
            audience: audience.to_owned(),
            next_id: 0,
        })
    }

    /// Puts a token; returns when the next one is due.
    async fn put(&mut self, tokens: &TokenSource) -> Result<SystemTime> {
        let (token, renew_at) = tokens.token();
        self.next_id += 1;
        let id = MessageId::String(format!("put-token-{}", self.next_id));
        let request = PutToken::new(self.audience.as_str(), token.secret(), id.clone());
        self.requests
            .send(request.to_message())
            .await
            .map_err(|e| transport("sending the CBS token failed", e))?;
        let message = answer_to(&mut self.answers, &id, "the CBS answer link broke").await?;
        let answer = PutTokenAnswer::parse(&message).map_err(|e| {
            Error::with_source(ErrorKind::Protocol, "the hub's CBS answer is unreadable", e)
        })?;
        let description = &answer.description;
        match answer.status_code {
            _ if answer.is_success() => Ok(renew_at),
            401 | 403 => Err(Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "the hub refused the token of policy {}: {description}",
                    tokens.policy_name()
                ),
            )),
            404 => Err(Error::new(
                ErrorKind::NotFound,
                format!("put-token: {} does not exist: {description}", self.audience),
            )),
            other => Err(Error::new(
                ErrorKind::Protocol,
                format!("the hub answered put-token with status {other}: {description}"),
            )),
        }
    }
}

/// The next message on `answers` whose correlation id is `id` (settled as accepted); answers
/// to earlier, abandoned requests are skipped. For request/answer nodes (`$cbs`,
/// `$management`).
pub(crate) async fn answer_to(
    answers: &mut Receiver,
    id: &MessageId,
    broke: &str,
) -> Result<azure_iot_protocol::amqp::AmqpMessage> {
    loop {
        let answer = answers
            .recv::<Body<Value>>()
            .await
            .map_err(|e| transport(broke, e))?;
        let _ = answers.accept(&answer).await;
        let message = answer.into_message();
        let correlates = message
            .properties
            .as_ref()
            .and_then(|p| p.correlation_id.as_ref())
            == Some(id);
        if correlates {
            return Ok(message);
        }
    }
}

/// A token renewal's wall-clock due time on tokio's clock (a time already past is now).
fn due_instant(at: SystemTime) -> Instant {
    Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()
}

/// Puts a fresh token on a connection; says when the next one is due.
trait RenewToken: Send {
    fn put_token(&mut self) -> impl Future<Output = Result<Instant>> + Send;
}

/// The `$cbs` links and the tokens to put on them.
struct CbsRenewal {
    cbs: Cbs,
    tokens: Arc<TokenSource>,
}

impl RenewToken for CbsRenewal {
    async fn put_token(&mut self) -> Result<Instant> {
        self.cbs.put(&self.tokens).await.map(due_instant)
    }
}

/// Puts a fresh token whenever one is due, until the connection goes. A put that fails (or
/// takes longer than `limit`) for another reason is tried again after [`RENEWAL_RETRY`].
async fn renew_forever(mut put: impl RenewToken, mut due: Instant, limit: Duration) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A renewal that records when it is called and answers from a script.
    struct Scripted {
        calls: Vec<Instant>,
        answers: VecDeque<Option<Result<Duration>>>,
    }

    impl RenewToken for &mut Scripted {
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
}
