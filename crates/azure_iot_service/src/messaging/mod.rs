//! Cloud-to-device messages and their delivery feedback over AMQP 1.0 (port 5671).
//!
//! One TLS connection and session carry three kinds of links:
//!
//! * `$cbs` request/answer links (`connection.rs`): the client puts a SAS token and renews it;
//! * [`SENDER_LINKS`] senders on `/messages/devicebound`: each message's `to` names the device;
//!   the hub settles it accepted (queued) or rejected with a condition we turn into an
//!   [`ErrorKind`];
//! * receivers on the service-bound inboxes, one generic receiver (`inbox.rs`) for both:
//!   `/messages/serviceBound/feedback` (`feedback.rs`) and
//!   `/messages/serviceBound/filenotifications` (`file_notification.rs`).
//!
//! Addresses, CBS and the message mapping are the protocol crate's
//! ([`azure_iot_protocol::amqp`]), the code the emulator serves them with.
//!
//! # Reconnecting
//!
//! [`Messaging`] keeps the current links in a slot behind a plain mutex that is only held to
//! read or swap it, never across an `.await`. A send that finds the links lost starts *one*
//! reconnect attempt — a shared future stored in the slot — and every send that arrives while
//! it runs awaits the same attempt and gets its result (the new links, or the same failure),
//! instead of reconnecting one after another. Status queries ([`Messaging::is_connected`])
//! read the slot and never wait for an attempt.
//!
//! ```text
//!   send ─▶ slot: Open(links) usable? ──yes──▶ send on a free sender link
//!                 │ no
//!                 ▼
//!           slot: Opening(shared attempt) ◀── joined by every concurrent send
//!                 │ done: first finisher stores Open(links) (or clears it on failure)
//! ```

mod connection;
mod feedback;
mod file_notification;
mod inbox;
mod message;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use azure_iot_protocol::amqp::Address;
use fe2o3_amqp::Receiver;
use fe2o3_amqp_types::definitions::{AmqpError, ErrorCondition, LinkError};
use fe2o3_amqp_types::messaging::Outcome;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use crate::credential::TokenSource;
use crate::error::{Error, ErrorKind, Result};
pub(crate) use connection::{
    CbsSession, answer_to, open_cbs_session, open_connection, transport, within,
};
use connection::{Endpoint, Link};

pub use connection::SENDER_LINKS;
pub use feedback::{FeedbackBatch, FeedbackReceiver, FeedbackRecord, FeedbackStatus};
pub use file_notification::{FileNotification, FileNotificationBatch, FileNotificationReceiver};
pub use inbox::{InboxBatch, InboxItem, InboxReceiver};
pub use message::{CloudToDeviceMessage, FeedbackMode, MAX_C2D_BODY};

/// The AMQP message type both directions use.
type AmqpMessage = azure_iot_protocol::amqp::AmqpMessage;

/// One reconnect attempt, awaited by every send that needs it.
type Attempt = Shared<BoxFuture<'static, std::result::Result<Arc<Link>, Arc<Error>>>>;

/// What the slot holds.
#[derive(Default)]
struct Slot {
    /// The current links (possibly found broken later).
    link: Option<Arc<Link>>,
    /// The reconnect attempt in progress, with its number.
    opening: Option<(u64, Attempt)>,
}

/// Cloud-to-device messaging over AMQP, from [`ServiceClient::messaging`](crate::ServiceClient::messaging).
///
/// Share it (`Arc<Messaging>`) to send from many tasks: the connection carries
/// [`SENDER_LINKS`] sender links, so that many sends wait for the hub's settlement at once.
/// A send that finds the connection lost opens a new one first; sends that find it lost at
/// the same time share that one attempt. A send whose link breaks after the message was
/// handed over fails with [`ErrorKind::Transport`] and is not repeated: the hub may have
/// queued it, and resending could deliver it twice. Feedback receivers keep the connection
/// they were attached on open for as long as they live.
pub struct Messaging {
    endpoint: Arc<Endpoint>,
    /// Held only to read or replace its contents, never across an `.await`.
    slot: std::sync::Mutex<Slot>,
    /// Numbers reconnect attempts.
    attempts: AtomicU64,
    closed: AtomicBool,
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messaging")
            .field("host", &self.endpoint.host)
            .field("port", &self.endpoint.port)
            .finish_non_exhaustive()
    }
}

impl Messaging {
    /// Opens the first connection (its failure is the caller's: nothing to share yet).
    pub(crate) async fn open(
        host: &str,
        port: u16,
        tls: Arc<rustls::ClientConfig>,
        tokens: Arc<TokenSource>,
        timeout: Duration,
    ) -> Result<Self> {
        let endpoint = Arc::new(Endpoint {
            host: host.to_owned(),
            port,
            tls,
            tokens,
            timeout,
        });
        let link = endpoint.open().await?;
        Ok(Self {
            endpoint,
            slot: std::sync::Mutex::new(Slot {
                link: Some(Arc::new(link)),
                opening: None,
            }),
            attempts: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        })
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        // A panic elsewhere while the lock was held left no half-made change (every change
        // is one assignment), so a poisoned slot is still good.
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn closed_error() -> Error {
        Error::new(ErrorKind::Closed, "the messaging connection is closed")
    }

    /// The current links, or the result of the one reconnect attempt that replaces them.
    async fn live(&self) -> Result<Arc<Link>> {
        let (number, attempt) = {
            let mut slot = self.slot();
            if self.closed.load(Ordering::Acquire) {
                return Err(Self::closed_error());
            }
            if let Some(link) = slot.link.as_ref().filter(|l| l.is_usable()) {
                return Ok(link.clone());
            }
            match &slot.opening {
                Some((number, attempt)) => (*number, attempt.clone()),
                None => {
                    let number = self.attempts.fetch_add(1, Ordering::Relaxed) + 1;
                    let endpoint = self.endpoint.clone();
                    tracing::debug!(host = %endpoint.host, attempt = number, "reopening the AMQP connection");
                    let attempt: Attempt =
                        async move { endpoint.open().await.map(Arc::new).map_err(Arc::new) }
                            .boxed()
                            .shared();
                    slot.link = None;
                    slot.opening = Some((number, attempt.clone()));
                    (number, attempt)
                }
            }
        };
        let result = attempt.await;
        let mut slot = self.slot();
        // The first waiter to finish installs the result; the others find it done.
        if slot.opening.as_ref().is_some_and(|(n, _)| *n == number) {
            slot.opening = None;
            if let Ok(link) = &result
                && !self.closed.load(Ordering::Acquire)
            {
                slot.link = Some(link.clone());
            }
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Self::closed_error());
        }
        result.map_err(|e| Error::shared(&e))
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
        let to = Address::DeviceBound {
            device_id: device_id.to_owned(),
            module_id: None,
        }
        .to_string();
        let amqp = message.to_amqp(to, message_id.clone())?;
        let link = self.live().await?;
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
        self.inbox().await
    }

    /// Attaches a receiver of file-upload notifications (one per completed upload, when the
    /// hub's file notifications are on). Like [`feedback`](Self::feedback) otherwise.
    pub async fn file_notifications(&self) -> Result<FileNotificationReceiver> {
        self.inbox().await
    }

    /// Attaches a receiver on the inbox `T` lives in, on the current connection.
    async fn inbox<T: InboxItem>(&self) -> Result<InboxReceiver<T>> {
        let conn = self.live().await?.conn.clone();
        let receiver = within(
            self.endpoint.timeout,
            &format!("attaching the {} link", T::WHAT),
            async {
                let mut session = conn.session.lock().await;
                // A few messages at a time at most: each one the hub hands over stays locked
                // to this receiver until it is settled.
                Receiver::builder()
                    .name(format!(
                        "{}-{}",
                        T::WHAT.replace(' ', "-"),
                        uuid::Uuid::new_v4()
                    ))
                    .source(T::ADDRESS.to_string())
                    .credit_mode(fe2o3_amqp::link::CreditMode::Auto(T::CREDIT))
                    .attach(&mut *session)
                    .await
                    .map_err(|e| transport(&format!("the hub refused the {} link", T::WHAT), e))
            },
        )
        .await?;
        Ok(InboxReceiver::new(receiver, conn))
    }

    /// Whether the connection is open and usable now (a send would reopen a lost one). Never
    /// waits: while a reconnect is in progress the answer is `false`.
    pub async fn is_connected(&self) -> bool {
        let current = self.slot().link.clone();
        current.is_some_and(|link| link.is_usable())
    }

    /// Closes the current connection and its links, including the feedback receivers attached
    /// on it; later sends fail with [`ErrorKind::Closed`]. A receiver attached on an earlier
    /// connection (one replaced after it was lost) keeps that connection until it is dropped.
    pub async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let link = {
            let mut slot = self.slot();
            slot.opening = None;
            slot.link.take()
        };
        let Some(link) = link else {
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
