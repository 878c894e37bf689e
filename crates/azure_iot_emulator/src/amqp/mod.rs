//! AMQP 1.0 on TLS (port 5671, and over WebSockets on the HTTPS port): the service side
//! (cloud-to-device sends and delivery feedback) and, growing, the device side ([`device`]).
//!
//! ```text
//!  TLS ─▶ protocol header? ──"AMQP 3 1 0 0"─▶ SASL (MSSBCBS, ANONYMOUS, PLAIN) ─┐
//!                          │                  (run by `sasl`; DPS logins checked by the DPS core)
//!                          └─"AMQP 0 1 0 0"─▶ no SASL (Node SDKs) ──────────────┤
//!                                                                               ▼
//!        connection ─▶ sessions ─▶ links, by address:
//!          $cbs (in)                      put-token: a SAS token grants its audience on this
//!                                         connection (one grant per audience, many per connection)
//!          $cbs (out)                     put-token answers: status-code 200 (Node accepts only 200)
//!          /messages/devicebound (in)     C2D messages: enqueued, accepted; or rejected with the
//!                                         hub's condition (amqp:not-found, resource-limit-exceeded ...)
//!          /messages/serviceBound/feedback (out)  feedback batches; accepted = completed
//!          /messages/serviceBound/filenotifications (out)  file-upload notifications, one a
//!                                         message; accepted = completed
//!          /devices/{d}[/modules/{m}]/messages/events (in)  device telemetry (see [`device`])
//!          {hub}/ConsumerGroups/{cg}/Partitions/{p} (out), $management (in/out),
//!          /messages/events/$management (out)   the Event Hubs-compatible endpoint (see
//!                                         [`eventhubs`]; CBS audiences `sb://{host}/{hub}…`)
//! ```
//!
//! Every performative the emulator writes carries all its fields ([`full_frames`]), as Azure's
//! services send them: pyamqp (the Event Hubs Python SDK) reads them by position.
//!
//! Addresses, put-token requests and answers, and the message mapping are the protocol crate's
//! ([`azure_iot_protocol::amqp`]), the code the service client sends them with. Every
//! client's variant is accepted: SASL or none; `amqps://host/...` or bare paths in any case;
//! message ids of any AMQP type. Links are granted receiver-settle-mode `first`, because uamqp
//! (the Python SDK) hangs if the server honours its request for `second`. An address that is
//! not an IoT Hub address is detached with `amqp:not-found`; a hub address the emulator does
//! not serve over AMQP with
//! `amqp:not-implemented`.
//!
//! # Grants
//!
//! A connection holds one grant per CBS audience (`{host}`, `{host}/devices/{id}` ...), each
//! with its token's expiry, at most `Limits::max_amqp_tokens` (IoT Hub allows 999 tokens
//! per connection); every link is checked against the grant of its own audience (the service
//! links against the hub's). A put-token whose audience is not this hub is answered 401, as
//! a token out of scope; one whose token does not cover its audience likewise (device A's
//! token for device B's audience). A device or module audience is granted by any token the
//! device core accepts for that identity (its own key, or a policy with DeviceConnect), and
//! the grant keeps what the core granted, to open the identity's connection at its first
//! link.

mod device;
mod dps;
pub(crate) mod eventhubs;
mod frame_guard;
pub(crate) mod full_frames;
mod prefixed;
mod sasl;
mod sasl_tpm;
mod typed;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use azure_iot_core::message::Message;
use azure_iot_protocol::amqp::{
    Address, AddressError, AmqpMessage, CbsAudience, PutToken, PutTokenAnswer, from_amqp, to_amqp,
};
use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SaslAcceptor,
    SessionAcceptor, SupportedReceiverSettleModes,
};
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp_types::definitions::{self, AmqpError, ErrorCondition};
use fe2o3_amqp_types::messaging::{Body, Outcome};
use fe2o3_amqp_types::primitives::{Array, Symbol, Value};
use fe2o3_amqp_types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::hub::Hub;
use crate::hub::error::ErrorCode;
use crate::hub::inbox::InboxKind;
use crate::hub::policy::{Policies, Rights};
use crate::net::serve_tls;

/// Sessions a connection may have open before it holds any grant (a client authenticating
/// by CBS needs one for `$cbs`; the official SDKs open at most two before their token).
const MAX_SESSIONS_BEFORE_GRANT: usize = 4;
/// Sessions a connection may have open (the AMQP `channel-max` is one less than this): room
/// for as many devices as a connection may hold tokens for, each on its own session (as C#
/// pools them), plus their CBS sessions.
const MAX_SESSIONS: usize = 1024;
/// The largest message a link accepts (a transfer of more frames is refused with
/// `amqp:link:message-size-exceeded` as it arrives): IoT Hub's largest message is 256 KiB, a
/// batch of them encoded one per section a little more.
const MAX_MESSAGE_BYTES: u64 = 512 * 1024;
/// How long a connection whose grants all stopped holding at once (a fault ending the
/// grant generation) is kept for a renewing put-token before it is closed.
const RENEWAL_GRACE: Duration = Duration::from_secs(1);
/// Links one session may have attached at once: a device uses at most eight (telemetry,
/// C2D, two each for twin, methods and `$cbs`), the service four; more is refused with
/// `amqp:resource-limit-exceeded`, so a client cannot make the emulator run tasks without
/// bound.
const MAX_LINKS_PER_SESSION: usize = 64;
/// The `handle-max` of every session: the highest link handle a client may use (links
/// attached at once are bounded by [`MAX_LINKS_PER_SESSION`]).
const HANDLE_MAX: u32 = u16::MAX as u32;
/// How long closing a connection may take before its socket is dropped regardless.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Answers kept for a receiver link (`$cbs` put-token answers, a DPS registration's answers):
/// answers waiting for the link to be attached, or sent to it faster than the client gives
/// credit. A client that lets more pile up has its request link detached.
const MAX_REPLIES: usize = 32;
/// How often an inbox link (feedback, file notifications) looks for new records when it has
/// none.
const INBOX_POLL: Duration = Duration::from_millis(250);
/// How long before a batch's lock ends a link stops waiting for its settlement.
const SETTLE_MARGIN: Duration = Duration::from_secs(1);

/// What every AMQP connection can reach.
pub(crate) struct AmqpContext {
    pub(crate) hub: Hub,
    pub(crate) policies: Arc<Policies>,
    pub(crate) hostname: Arc<str>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Moved on by `Fault::ExpireServiceTokens`.
    pub(crate) grant_generation: watch::Receiver<u64>,
    /// Connection limits and timeouts: `connect_timeout` bounds the header, SASL, open and
    /// first token.
    pub(crate) limits: crate::config::Limits,
    /// The device core the device links are adapters over.
    pub(crate) device: crate::device::DeviceCore,
    /// The Device Provisioning Service, for DPS connections and links ([`dps`]).
    pub(crate) dps: crate::dps::Dps,
    /// The Event Hubs-compatible endpoint ([`eventhubs`]).
    pub(crate) eventhubs: Arc<eventhubs::EventHubs>,
}

/// Serves AMQP over TLS on `listener` until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    context: Arc<AmqpContext>,
    shutdown: watch::Receiver<bool>,
) {
    let limits = context.limits;
    serve_tls(
        listener,
        tls,
        limits,
        shutdown,
        move |stream, peer, _slot| {
            let context = context.clone();
            let certificates = crate::mqtt::client_certificate(&stream);
            async move { run(stream, peer, context, certificates).await }
        },
    )
    .await;
}

/// The most grants (CBS audiences) one connection may hold unless configured otherwise
/// (`Limits::max_amqp_tokens`).
#[cfg(test)]
pub(crate) const MAX_GRANTS: usize = crate::config::Limits::DEFAULT_AMQP_TOKENS;

/// Per-connection state shared by its links.
struct ConnectionState {
    /// The grants of this connection by audience resource (SASL PLAIN or CBS put-token):
    /// after a token expires, that audience's links are refused until a fresh token is put,
    /// as on the hub.
    grants: Mutex<HashMap<String, Grant>>,
    /// The hub's grant generation; `Fault::ExpireServiceTokens` moves it on, which ends every
    /// grant made before, as if its token had expired.
    generation: watch::Receiver<u64>,
    /// Where CBS answers go. uamqp sends its put-token before it has attached (or we have
    /// accepted) its `$cbs` receiver link, so answers wait here until that link exists.
    cbs: Mutex<Replies>,
    /// Where Event Hubs `$management` answers go, like `cbs`.
    management: Mutex<Replies>,
    /// The connection's DPS login and answers, if it is a DPS one ([`dps`]).
    dps: dps::DpsState,
    /// The device and module identities with links on this connection.
    units: device::Units,
    /// A device's SASL PLAIN credentials (`{id}@sas.{hub}` and its token), checked once the
    /// connection is open (SASL callbacks cannot wait for the hub).
    plain_device: Mutex<Option<(azure_iot_protocol::Identity, String)>>,
    /// The TLS client certificate chain (leaf first; empty if none): X.509 devices
    /// authenticate with it at their first link, without a token.
    certificates: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// The most grants this connection may hold (`Limits::max_amqp_tokens`).
    max_grants: usize,
    /// Signalled on every grant, so the connection's loop recomputes when its credentials
    /// end (the first grant, or a renewal, changes that).
    granted: tokio::sync::Notify,
}

/// Answers on their way to the client over one receiver link of its (put-token answers on
/// `$cbs`, DPS answers), at most [`MAX_REPLIES`] in each place. A client may send its
/// request before the link that takes the answers is attached (uamqp does, on `$cbs`), so
/// answers wait here until that link exists.
struct Replies {
    /// What the answers are, for the refusal when too many wait.
    what: &'static str,
    link: Option<mpsc::Sender<AmqpMessage>>,
    pending: Vec<AmqpMessage>,
}

impl Replies {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            link: None,
            pending: Vec::new(),
        }
    }

    /// Hands `reply` to the receiver link, or keeps it until one is attached. `Err` when
    /// [`MAX_REPLIES`] answers already wait: the client does not take its answers.
    fn deliver(&mut self, reply: AmqpMessage) -> Result<(), String> {
        let what = self.what;
        let reply = match &self.link {
            Some(link) => match link.try_send(reply) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(format!(
                        "{MAX_REPLIES} {what} wait for credit on their receiver link"
                    ));
                }
                // The link is gone: keep the answer for the next one the client attaches.
                Err(mpsc::error::TrySendError::Closed(reply)) => {
                    self.link = None;
                    reply
                }
            },
            None => reply,
        };
        if self.pending.len() >= MAX_REPLIES {
            return Err(format!(
                "{MAX_REPLIES} {what} wait for their receiver link to be attached"
            ));
        }
        self.pending.push(reply);
        Ok(())
    }

    /// Makes a newly attached receiver link the one answers go to: the answers waiting, then
    /// each as it comes, arrive on the returned channel.
    fn attach(&mut self) -> mpsc::Receiver<AmqpMessage> {
        let (tx, rx) = mpsc::channel(MAX_REPLIES);
        // At most MAX_REPLIES wait, so they all fit the new link's channel.
        for reply in self.pending.drain(..) {
            let _ = tx.try_send(reply);
        }
        self.link = Some(tx);
        rx
    }
}

/// Sends the answers arriving on `answers` over `sender` until the link or the channel ends
/// or the emulator shuts down; then closes the link.
async fn forward_replies(
    mut sender: Sender,
    mut answers: mpsc::Receiver<AmqpMessage>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            reply = answers.recv() => match reply {
                Some(reply) => {
                    if sender.send(reply).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            _ = sender.on_detach() => break,
            _ = shutdown.changed() => break,
        }
    }
    let _ = sender.close().await;
}

/// What authorized an audience: its token's expiry, and the grant generation.
struct Grant {
    expiry: SystemTime,
    generation: u64,
    /// For a device or module audience: what the device core granted (to open the
    /// identity's connection at its first link).
    device: Option<crate::device::Grant>,
}

impl ConnectionState {
    fn new(
        generation: watch::Receiver<u64>,
        certificates: Vec<rustls_pki_types::CertificateDer<'static>>,
        max_grants: usize,
    ) -> Self {
        Self {
            grants: Mutex::new(HashMap::new()),
            generation,
            cbs: Mutex::new(Replies::new("put-token answers")),
            management: Mutex::new(Replies::new("management answers")),
            dps: dps::DpsState::default(),
            units: device::Units::default(),
            plain_device: Mutex::new(None),
            certificates,
            max_grants,
            granted: tokio::sync::Notify::new(),
        }
    }

    /// For `audience`: `Some(true)` while its grant holds, `Some(false)` once it expired,
    /// `None` if no token was ever put for it.
    fn grant_holds(&self, audience: &str) -> Option<bool> {
        let current = *self.generation.borrow();
        self.grants
            .lock()
            .ok()?
            .get(audience)
            .map(|grant| SystemTime::now() < grant.expiry && grant.generation == current)
    }

    /// Whether any token was ever granted on this connection (expired or not).
    fn has_grants(&self) -> bool {
        self.grants.lock().map(|g| !g.is_empty()).unwrap_or(false)
    }

    /// When the last grant that still holds expires; `None` if none holds.
    fn last_expiry(&self) -> Option<SystemTime> {
        let current = *self.generation.borrow();
        let now = SystemTime::now();
        self.grants
            .lock()
            .ok()?
            .values()
            .filter(|g| g.generation == current && now < g.expiry)
            .map(|g| g.expiry)
            .max()
    }

    fn authorized(&self, audience: &str) -> bool {
        self.grant_holds(audience) == Some(true)
    }

    /// Whether a token was put for `audience` and has expired since (as opposed to never put).
    fn expired(&self, audience: &str) -> bool {
        self.grant_holds(audience) == Some(false)
    }

    /// Grants `audience` until `expiry` (its token's), replacing an earlier grant for it.
    /// Fails when the connection already holds `max_grants` other audiences that still
    /// hold (expired ones make room).
    fn authorize(&self, audience: String, expiry: SystemTime) -> Result<(), String> {
        self.grant(audience, expiry, None)
    }

    /// For a device or module `audience` that still holds: the device core's grant.
    fn device_grant(&self, audience: &str) -> Option<crate::device::Grant> {
        let current = *self.generation.borrow();
        let grants = self.grants.lock().ok()?;
        let grant = grants.get(audience)?;
        let holds = SystemTime::now() < grant.expiry && grant.generation == current;
        grant.device.clone().filter(|_| holds)
    }

    /// When the grant for `audience` expires, if it holds.
    fn grant_expiry(&self, audience: &str) -> Option<SystemTime> {
        let current = *self.generation.borrow();
        let grants = self.grants.lock().ok()?;
        let grant = grants.get(audience)?;
        (SystemTime::now() < grant.expiry && grant.generation == current).then_some(grant.expiry)
    }

    /// Grants `audience` until `expiry`, with the device core's grant for a device audience.
    fn grant(
        &self,
        audience: String,
        expiry: SystemTime,
        device: Option<crate::device::Grant>,
    ) -> Result<(), String> {
        let generation = *self.generation.borrow();
        let Ok(mut grants) = self.grants.lock() else {
            return Err("the connection's grants are unavailable".to_owned());
        };
        let most = self.max_grants;
        if !grants.contains_key(&audience) && grants.len() >= most {
            let now = SystemTime::now();
            grants.retain(|_, g| now < g.expiry && g.generation == generation);
            if grants.len() >= most {
                return Err(format!(
                    "this connection already holds {most} tokens, the most it may hold"
                ));
            }
        }
        grants.insert(
            audience,
            Grant {
                expiry,
                generation,
                device,
            },
        );
        self.granted.notify_one();
        Ok(())
    }
}

/// Serves one AMQP connection (from the TLS port or a WebSocket upgrade).
///
/// The protocol header, SASL exchange, `open` and the first grant (SASL PLAIN or a CBS
/// put-token) must all happen within `connect_timeout` of the call; until the first grant the
/// connection may open at most [`MAX_SESSIONS_BEFORE_GRANT`] sessions, after it
/// [`MAX_SESSIONS`]. Once every token put on it has expired (and none was renewed) the
/// connection is closed, as IoT Hub does: an authenticated connection lives as long as its
/// credentials. Any bound passed closes the connection with the reason; a client that does
/// not answer the close loses its socket [`CLOSE_TIMEOUT`] later.
///
/// No AMQP `idle-time-out` is advertised: fe2o3 enforces the value it advertises and its own
/// clients (this project's service client among them) send empty frames at exactly the
/// advertised interval, not half of it, so an idle connection would race its own heartbeat.
pub(crate) async fn run<S>(
    mut stream: S,
    peer: std::net::SocketAddr,
    context: Arc<AmqpContext>,
    certificates: Vec<rustls_pki_types::CertificateDer<'static>>,
) where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let limits = context.limits;
    let deadline = tokio::time::Instant::now() + limits.connect_timeout;
    let mut header = [0u8; 8];
    match tokio::time::timeout_at(deadline, stream.read_exact(&mut header)).await {
        Ok(Ok(_)) if &header[..4] == b"AMQP" => {}
        _ => {
            tracing::debug!(%peer, "no AMQP protocol header; closing");
            return;
        }
    }
    let state = Arc::new(ConnectionState::new(
        context.grant_generation.clone(),
        certificates,
        limits.max_amqp_tokens,
    ));
    // fe2o3 runs the connection in a task of its own, which owns the stream: dropping `_stop`
    // (when this function returns) ends that task's reads, and so the socket.
    let (stream, _stop) = crate::net::Stoppable::new(stream);
    // Every frame header is checked before the AMQP library decodes it (see `frame_guard`).
    // And every performative the emulator writes carries all its fields (see `full_frames`).
    let mut io = frame_guard::FrameGuard::new(full_frames::FullFrames::new(
        prefixed::Prefixed::new(header.to_vec(), stream),
    ));
    let container = format!("azure-iot-emulator:{}", context.hostname);
    let channel_max = u16::try_from(MAX_SESSIONS - 1).unwrap_or(u16::MAX);
    let accepting = async {
        match header[4] {
            // SASL first (Python uamqp, C SDK, DPS devices with a SAS token): done here (see
            // `sasl`), then the library takes the plain AMQP header that follows.
            3 => {
                let mut sasl = HubSasl {
                    context: context.clone(),
                    state: state.clone(),
                };
                if let Err(why) = sasl::negotiate(&mut io, &mut sasl, &state, &context).await {
                    tracing::info!(%peer, reason = %why, "AMQP SASL did not succeed; closing");
                    return None;
                }
            }
            // Plain AMQP, authentication by CBS only (Node SDKs).
            0 => {}
            other => {
                tracing::debug!(%peer, protocol = other, "unsupported AMQP protocol id; closing");
                return None;
            }
        }
        Some(
            ConnectionAcceptor::builder()
                .container_id(container)
                .channel_max(channel_max)
                .properties(open_properties())
                .build()
                .accept(io)
                .await,
        )
    };
    let mut connection = match tokio::time::timeout_at(deadline, accepting).await {
        Ok(Some(Ok(connection))) => connection,
        Ok(Some(Err(e))) => {
            tracing::info!(%peer, error = %e, "AMQP connection refused");
            return;
        }
        Ok(None) => return,
        Err(_) => {
            tracing::info!(%peer, timeout = ?limits.connect_timeout, "AMQP connection not opened in time; closing");
            return;
        }
    };
    let plain_device = state.plain_device.lock().ok().and_then(|mut p| p.take());
    if let Some((identity, token)) = plain_device
        && let Err(why) = device::grant_plain(&state, &context, &identity, &token).await
    {
        tracing::info!(%peer, %identity, reason = %why, "SASL PLAIN refused for a device");
        let refusal = error(AmqpError::UnauthorizedAccess, why);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close_with_error(refusal)).await;
        return;
    }
    tracing::info!(%peer, "AMQP connection opened");
    let mut shutdown = context.shutdown.clone();
    let mut sessions = tokio::task::JoinSet::new();
    let refusal = loop {
        while sessions.try_join_next().is_some() {}
        let authenticating = !state.has_grants();
        // Until then, the connection lives on; re-checked on every turn, so a renewal counts.
        let credentials_end = state
            .last_expiry()
            .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default());
        tokio::select! {
            incoming = connection.next_incoming_session() => {
                let Some(incoming) = incoming else { break None };
                let allowed = if state.has_grants() { MAX_SESSIONS } else { MAX_SESSIONS_BEFORE_GRANT };
                if sessions.len() >= allowed {
                    break Some(error(
                        AmqpError::ResourceLimitExceeded,
                        format!("a connection may have {allowed} sessions open{}", if allowed == MAX_SESSIONS { "" } else { " before its first token" }),
                    ));
                }
                match session_acceptor().accept_incoming_session(incoming, &mut connection).await {
                    Ok(session) => {
                        sessions.spawn(serve_session(session, state.clone(), context.clone()));
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "AMQP session refused");
                        break None;
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline), if authenticating => {
                if !state.has_grants() {
                    break Some(error(
                        AmqpError::UnauthorizedAccess,
                        format!("no token was put within {:?} of connecting", limits.connect_timeout),
                    ));
                }
            }
            _ = tokio::time::sleep(credentials_end.unwrap_or_default()), if !authenticating && credentials_end.is_some() => {
                if state.last_expiry().is_none() {
                    break Some(error(
                        AmqpError::UnauthorizedAccess,
                        "every token put on this connection has expired",
                    ));
                }
            }
            _ = tokio::time::sleep(RENEWAL_GRACE), if !authenticating && credentials_end.is_none() => {
                // No grant holds (ended at once by a fault, or expired): a renewal within the
                // grace would have made one hold again.
                break Some(error(
                    AmqpError::UnauthorizedAccess,
                    "every token put on this connection has expired",
                ));
            }
            // A grant: when the credentials end is recomputed on the next turn.
            () = state.granted.notified() => {}
            _ = shutdown.changed() => break None,
        }
    };
    sessions.abort_all();
    let closing = match refusal {
        Some(refusal) => {
            tracing::info!(%peer, reason = ?refusal.description, "AMQP connection closed by the emulator");
            tokio::time::timeout(CLOSE_TIMEOUT, connection.close_with_error(refusal)).await
        }
        None => tokio::time::timeout(CLOSE_TIMEOUT, connection.close()).await,
    };
    if closing.is_err() {
        tracing::debug!(%peer, "the client did not answer the close; dropping its socket");
    }
    tracing::info!(%peer, "AMQP connection closed");
}

/// Accepts sessions with an explicit `handle-max` ([`HANDLE_MAX`]): left at its default
/// (`u32::MAX`), fe2o3 leaves it out of `begin`, and pyamqp then compares against nothing.
fn session_acceptor() -> SessionAcceptor {
    SessionAcceptor::builder().handle_max(HANDLE_MAX).build()
}

/// The `open` frame's `properties`: the product. Sent so that the frame carries every field
/// (up to `properties`, the last): pyamqp (the Event Hubs Python SDK) reads the open's fields
/// by position and fails on a frame whose trailing null fields are left out.
fn open_properties() -> definitions::Fields {
    let mut properties = definitions::Fields::default();
    properties.insert(
        Symbol::from("product"),
        Value::String("azure-iot-emulator".to_owned()),
    );
    properties
}

/// Serves one session's links until the session ends; its link tasks end with it (when this
/// returns, or when the connection aborts it).
///
/// A link does not always notice by itself that its session is gone: fe2o3 keeps the
/// settlement of an unsettled delivery in the link's own map, so a `$cbs` answer sent just
/// before the client vanished without settling it waited forever, holding the link, its task
/// and the connection's state (found by the `amqp_frames` fuzz target).
///
/// When it stops accepting links, the session is ended by dropping its handle and its links,
/// not with `end()`: fe2o3 0.18.4's session engine, once it has sent `end`, spins on its
/// closed link-frame channel until the client answers with its own `end` while any link or
/// handle is alive, and `end()` keeps the handle alive by waiting for the engine (a core
/// held for as long as the client kept the connection open without ending; found by the fuzz
/// target). With every handle gone, the engine waits for the client's `end` without spinning.
async fn serve_session(
    mut session: ListenerSessionHandle,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    let acceptor = LinkAcceptor::builder()
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(fe2o3_amqp_types::definitions::ReceiverSettleMode::First)
        .max_message_size(MAX_MESSAGE_BYTES)
        .build();
    // Event Hubs consumer links are attached settling on send (see eventhubs::consumer).
    let consumers = eventhubs::link_acceptor(MAX_MESSAGE_BYTES);
    // Dropped (every link task aborted) when the session ends, and with the connection, which
    // aborts its sessions.
    let mut links = tokio::task::JoinSet::new();
    loop {
        while links.try_join_next().is_some() {}
        let full = links.len() >= MAX_LINKS_PER_SESSION;
        let too_many = || {
            error(
                AmqpError::ResourceLimitExceeded,
                format!("a session may have {MAX_LINKS_PER_SESSION} links attached"),
            )
        };
        // The peer's attach is read here (not inside `accept`) for what fe2o3's links do not
        // keep: the desired capabilities an Event Hubs receiver asks with, and whether it is a
        // consumer link (attached settling on send).
        let Some(attach) = session.next_incoming_attach().await else {
            tracing::debug!("AMQP session ended");
            break;
        };
        let runtime_metric = eventhubs::asks_runtime_metric(&attach);
        let chosen = if eventhubs::is_consumer_attach(&attach) {
            &consumers
        } else {
            &acceptor
        };
        match chosen.accept_incoming_attach(attach, &mut session).await {
            Ok(LinkEndpoint::Receiver(receiver)) if full => {
                let _ = receiver.close_with_error(too_many()).await;
            }
            Ok(LinkEndpoint::Sender(sender)) if full => {
                let _ = sender.close_with_error(too_many()).await;
            }
            Ok(LinkEndpoint::Receiver(receiver)) => {
                links.spawn(serve_inbound(receiver, state.clone(), context.clone()));
            }
            Ok(LinkEndpoint::Sender(sender)) => {
                links.spawn(serve_outbound(
                    sender,
                    runtime_metric,
                    state.clone(),
                    context.clone(),
                ));
            }
            Err(e) => {
                tracing::debug!(error = %e, "AMQP session ended");
                break;
            }
        }
    }
    // Links first (aborted), then the handle, whose drop sends the session's `end` (awaiting
    // `end()` would let fe2o3's session engine spin until the client answers).
    drop(links);
    drop(session);
}

/// Why a link is not served: an address that is not IoT Hub's is `amqp:not-found` (as the
/// hub answers an unknown entity); a hub address the emulator does not serve over AMQP is
/// `amqp:not-implemented`, saying so.
fn unserved(
    address: Option<&str>,
    parsed: Result<Address, AddressError>,
    direction: &str,
) -> definitions::Error {
    match parsed {
        Err(e) => error(AmqpError::NotFound, e.to_string()),
        Ok(_) => error(
            AmqpError::NotImplemented,
            format!(
                "the emulator does not serve `{}` for {direction} over AMQP",
                address.unwrap_or_default()
            ),
        ),
    }
}

fn error(
    condition: impl Into<ErrorCondition>,
    description: impl Into<String>,
) -> definitions::Error {
    definitions::Error::new(condition, Some(description.into()), None)
}

/// The device or module an address names.
fn identity(device_id: String, module_id: Option<String>) -> azure_iot_protocol::Identity {
    match module_id {
        Some(module) => azure_iot_protocol::Identity::module(device_id, module),
        None => azure_iot_protocol::Identity::device(device_id),
    }
}

/// Links the client sends on: `$cbs` requests and cloud-to-device messages.
async fn serve_inbound(receiver: Receiver, state: Arc<ConnectionState>, context: Arc<AmqpContext>) {
    let target = receiver
        .target()
        .as_ref()
        .and_then(|t| t.address.as_deref())
        .map(str::to_owned);
    let target_text = target.as_deref().unwrap_or_default();
    if crate::route::amqp(target_text) == crate::route::Service::Dps {
        let address = target_text.to_owned();
        return dps::serve_requests(receiver, address, state, context).await;
    }
    if eventhubs::address::EhAddress::parse(target_text)
        == Some(eventhubs::address::EhAddress::Management)
    {
        return eventhubs::serve_management_requests(receiver, state, context).await;
    }
    let address = Address::parse(target_text);
    match address {
        Ok(Address::Cbs) => serve_cbs_requests(receiver, state, context).await,
        Ok(Address::Events {
            device_id,
            module_id,
        }) => {
            let identity = identity(device_id, module_id);
            device::serve_telemetry(receiver, identity, state, context).await;
        }
        Ok(Address::Twin {
            device_id,
            module_id,
        }) => {
            let identity = identity(device_id, module_id);
            device::serve_twin_requests(receiver, identity, state, context).await;
        }
        Ok(Address::Methods {
            device_id,
            module_id,
        }) => {
            let identity = identity(device_id, module_id);
            device::serve_method_answers(receiver, identity, state, context).await;
        }
        Ok(Address::ServiceDeviceBound) => serve_c2d(receiver, state, context).await,
        other => {
            let _ = receiver
                .close_with_error(unserved(target.as_deref(), other, "sending"))
                .await;
        }
    }
}

/// Links the client receives on: `$cbs` answers and feedback. `runtime_metric`: the peer
/// asked for last-enqueued-event information (Event Hubs consumers).
async fn serve_outbound(
    sender: Sender,
    runtime_metric: bool,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    let source = sender
        .source()
        .as_ref()
        .and_then(|s| s.address.as_deref())
        .map(str::to_owned);
    let source_text = source.as_deref().unwrap_or_default();
    if crate::route::amqp(source_text) == crate::route::Service::Dps {
        let address = source_text.to_owned();
        return dps::serve_answers(sender, address, state, context).await;
    }
    match eventhubs::address::EhAddress::parse(source_text) {
        Some(eventhubs::address::EhAddress::Consumer {
            entity,
            consumer_group,
            partition,
        }) => {
            let consumer = eventhubs::Consumer {
                entity,
                consumer_group,
                partition,
                runtime_metric,
            };
            return eventhubs::serve_consumer(sender, consumer, state, context).await;
        }
        Some(eventhubs::address::EhAddress::Management) => {
            let Ok(answers) = state.management.lock().map(|mut m| m.attach()) else {
                let _ = sender.close().await;
                return;
            };
            drop(state);
            return forward_replies(sender, answers, context.shutdown.clone()).await;
        }
        Some(eventhubs::address::EhAddress::HubEvents(partition)) => {
            return eventhubs::redirect(sender, partition, &state, &context).await;
        }
        None => {}
    }
    let address = Address::parse(source_text);
    match address {
        Ok(Address::Cbs) => {
            let Ok(answers) = state.cbs.lock().map(|mut cbs| cbs.attach()) else {
                let _ = sender.close().await;
                return;
            };
            // The connection state holds the other end of `answers`: let go of it, or this
            // task and the state would keep each other alive after the connection ends.
            drop(state);
            forward_replies(sender, answers, context.shutdown.clone()).await;
        }
        Ok(Address::Feedback) => serve_inbox(sender, state, context, InboxKind::Feedback).await,
        Ok(Address::FileNotifications) => {
            serve_inbox(sender, state, context, InboxKind::FileNotifications).await
        }
        Ok(Address::DeviceBound {
            device_id,
            module_id: None,
        }) => {
            let identity = azure_iot_protocol::Identity::device(device_id);
            device::serve_c2d(sender, identity, state, context).await;
        }
        Ok(Address::Twin {
            device_id,
            module_id,
        }) => {
            let identity = identity(device_id, module_id);
            device::serve_twin_answers(sender, identity, state, context).await;
        }
        Ok(Address::Methods {
            device_id,
            module_id,
        }) => {
            let identity = identity(device_id, module_id);
            device::serve_method_requests(sender, identity, state, context).await;
        }
        other => {
            let _ = sender
                .close_with_error(unserved(source.as_deref(), other, "receiving"))
                .await;
        }
    }
}

/// CBS put-token: checks the token for its audience, grants that audience on this
/// connection, and answers 200; or 400 (not a put-token), 401 (bad token, or an audience
/// that is not this hub or that the token does not cover), 403 (too many grants).
async fn serve_cbs_requests(
    mut receiver: Receiver,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    loop {
        let delivery = match receiver.recv::<Body<Value>>().await {
            Ok(delivery) => delivery,
            Err(_) => break,
        };
        let _ = receiver.accept(&delivery).await;
        let message = delivery.into_message();
        let answer = match PutToken::parse(&message) {
            Ok(request) => {
                let (status, description) = match put_token(&context, &state, &request).await {
                    Ok(()) => (200, "OK".to_owned()),
                    Err(refusal) => refusal,
                };
                PutTokenAnswer::to(&request, status, description)
            }
            // Not a put-token we can read: still answered, so the client is not left waiting.
            Err(e) => PutTokenAnswer {
                status_code: 400,
                description: e.to_string(),
                correlation_id: message
                    .properties
                    .as_ref()
                    .and_then(|p| p.message_id.clone()),
                to: message.properties.as_ref().and_then(|p| p.reply_to.clone()),
            },
        };
        receiver = match reply_or_close(receiver, &state.cbs, answer.to_message()).await {
            Some(receiver) => receiver,
            None => return,
        };
    }
    let _ = receiver.close().await;
}

/// Hands `reply` to the connection's answers in `replies` (`$cbs`, `$management`); when too
/// many wait (the client does not take its answers), closes the request link with
/// `amqp:resource-limit-exceeded`. The request link to go on with, if it is still open.
async fn reply_or_close(
    receiver: Receiver,
    replies: &Mutex<Replies>,
    reply: AmqpMessage,
) -> Option<Receiver> {
    let delivered = match replies.lock() {
        Ok(mut replies) => replies.deliver(reply),
        Err(_) => Err("the connection's answers are unavailable".to_owned()),
    };
    match delivered {
        Ok(()) => Some(receiver),
        Err(why) => {
            let _ = receiver
                .close_with_error(error(AmqpError::ResourceLimitExceeded, why))
                .await;
            None
        }
    }
}

/// Checks a put-token and grants its audience: the hub's own audience needs a service token
/// (ServiceConnect); a device or module audience a token the device core accepts for that
/// identity (its own key, or a policy with DeviceConnect), the identity registered and
/// enabled.
async fn put_token(
    context: &AmqpContext,
    state: &ConnectionState,
    request: &PutToken,
) -> Result<(), (i32, String)> {
    let unauthorized = |why: String| (401, why);
    if let Some(checked) =
        context
            .eventhubs
            .check_audience(&context.policies, &request.audience, &request.token)
    {
        let expiry = checked.map_err(unauthorized)?;
        return state
            .authorize(context.eventhubs.grant_key(), expiry)
            .map_err(|why| (403, why));
    }
    let audience = CbsAudience::parse(&request.audience).ok_or_else(|| {
        unauthorized(format!(
            "the audience `{}` is not an IoT Hub resource",
            truncated(&request.audience)
        ))
    })?;
    if !audience.host.eq_ignore_ascii_case(&context.hostname) {
        return Err(unauthorized(format!(
            "the audience `{}` is not this hub (`{}`)",
            truncated(&request.audience),
            context.hostname
        )));
    }
    let (expiry, device) = match &audience.device_id {
        None => (
            check_service_token(context, &request.token).map_err(unauthorized)?,
            None,
        ),
        Some(device_id) => {
            let identity = match &audience.module_id {
                Some(module) => azure_iot_protocol::Identity::module(device_id, module),
                None => azure_iot_protocol::Identity::device(device_id),
            };
            let grant = context
                .device
                .authenticate(&identity, Some(&request.token), &[])
                .await
                .map_err(|refusal| unauthorized(refusal.detail))?;
            let expiry = grant
                .expires_at
                .ok_or_else(|| unauthorized("the token has no expiry".to_owned()))?;
            (expiry, Some(grant))
        }
    };
    state
        .grant(grant_key(&audience), expiry, device)
        .map_err(|why| (403, why))
}

/// The key a grant is kept under: the audience's resource, host lower-cased.
fn grant_key(audience: &CbsAudience) -> String {
    audience.resource()
}

/// The grant key of the hub's own audience (the service links').
fn hub_audience(context: &AmqpContext) -> String {
    context.hostname.to_ascii_lowercase()
}

/// The grant key of the hub's `/messages/events` (a SASL PLAIN login scoped to the built-in
/// endpoint: it may only be redirected).
fn events_audience(context: &AmqpContext) -> String {
    format!("{}/messages/events", hub_audience(context))
}

/// At most 64 characters of client text, for an answer.
fn truncated(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Checks a token for service use: a policy (`skn`) with ServiceConnect, signature, expiry,
/// and a resource covering the hub. Returns the token's expiry.
fn check_service_token(context: &AmqpContext, token: &str) -> Result<SystemTime, String> {
    check_service_token_for(context, token, &context.hostname)
}

/// [`check_service_token`] for a resource under the hub (`target`).
fn check_service_token_for(
    context: &AmqpContext,
    token: &str,
    target: &str,
) -> Result<SystemTime, String> {
    context
        .policies
        .authorize(
            Some(token),
            target,
            Rights::SERVICE_CONNECT,
            SystemTime::now(),
        )
        .map_err(|e| e.message)?;
    Ok(azure_iot_core::SasToken::parse(token)
        .map_err(|e| e.to_string())?
        .expires_at())
}

/// SASL: MSSBCBS and ANONYMOUS succeed (authentication follows by CBS); PLAIN with
/// `{policy}@sas.root.{hub}` and a SAS token authorizes the connection at once.
#[derive(Clone)]
struct HubSasl {
    context: Arc<AmqpContext>,
    state: Arc<ConnectionState>,
}

impl SaslAcceptor for HubSasl {
    fn mechanisms(&self) -> Array<Symbol> {
        Array(vec![
            Symbol::from("MSSBCBS"),
            Symbol::from("ANONYMOUS"),
            Symbol::from("PLAIN"),
            Symbol::from("TPM"),
        ])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        let code = match init.mechanism.as_str() {
            // EXTERNAL: a DPS device with a TLS client certificate (checked at its first link).
            "MSSBCBS" | "ANONYMOUS" | "EXTERNAL" => SaslCode::Ok,
            // Run by `sasl_tpm` before this acceptor is asked; reaching here is a misroute.
            "TPM" => SaslCode::Sys,
            "PLAIN" => {
                let response = init
                    .initial_response
                    .map(|b| b.into_vec())
                    .unwrap_or_default();
                let mut parts = response.split(|b| *b == 0);
                let _authzid = parts.next();
                let authcid = parts
                    .next()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                let password = parts
                    .next()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                match (authcid, password) {
                    // A DPS device (`{idScope}/registrations/{regId}`): checked once the
                    // connection is open, where the DPS core can be asked.
                    (Some(user), Some(token))
                        if crate::route::amqp(&user) == crate::route::Service::Dps =>
                    {
                        if dps::plain(&self.state, &user, token) {
                            SaslCode::Ok
                        } else {
                            SaslCode::Auth
                        }
                    }
                    // A device or module (`{d}[/modules/{m}]@sas.{hub}`): checked once the
                    // connection is open, where the hub can be asked.
                    (Some(user), Some(token))
                        if !user.contains("@sas.root.") && user.contains("@sas.") =>
                    {
                        let who = user.split("@sas.").next().unwrap_or_default();
                        let identity = match who.split_once("/modules/") {
                            Some((device, module)) => {
                                azure_iot_protocol::Identity::module(device, module)
                            }
                            None => azure_iot_protocol::Identity::device(who),
                        };
                        match self.state.plain_device.lock() {
                            Ok(mut slot) => {
                                *slot = Some((identity, token));
                                SaslCode::Ok
                            }
                            Err(_) => SaslCode::Sys,
                        }
                    }
                    // An Event Hubs client: a policy name and its key or a SAS token.
                    (Some(user), Some(password)) if !user.contains('@') => {
                        let eh = &self.context.eventhubs;
                        match eh
                            .check_plain(&self.context.policies, &user, &password)
                            .and_then(|expiry| self.state.authorize(eh.grant_key(), expiry))
                        {
                            Ok(()) => SaslCode::Ok,
                            Err(why) => {
                                tracing::info!(reason = %why, "SASL PLAIN refused for the Event Hubs endpoint");
                                SaslCode::Auth
                            }
                        }
                    }
                    (Some(user), Some(token)) if user.contains("@sas.root.") => {
                        // The hub's resource, or (Event Hubs clients converting an IoT Hub
                        // connection string) only its built-in endpoint's `/messages/events`,
                        // which grants no more than the redirect to the endpoint.
                        let checked = match check_service_token(&self.context, &token) {
                            Ok(expiry) => Ok((hub_audience(&self.context), expiry)),
                            Err(why) => {
                                let events = events_audience(&self.context);
                                check_service_token_for(&self.context, &token, &events)
                                    .map(|expiry| (events, expiry))
                                    .map_err(|_| why)
                            }
                        };
                        match checked
                            .and_then(|(audience, expiry)| self.state.authorize(audience, expiry))
                        {
                            Ok(()) => SaslCode::Ok,
                            Err(why) => {
                                tracing::info!(reason = %why, "SASL PLAIN refused");
                                SaslCode::Auth
                            }
                        }
                    }
                    _ => SaslCode::Auth,
                }
            }
            _ => SaslCode::Auth,
        };
        SaslServerFrame::Outcome(SaslOutcome {
            code,
            additional_data: None,
        })
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        SaslServerFrame::Outcome(SaslOutcome {
            code: SaslCode::Auth,
            additional_data: None,
        })
    }
}

/// Cloud-to-device messages from the service.
async fn serve_c2d(mut receiver: Receiver, state: Arc<ConnectionState>, context: Arc<AmqpContext>) {
    loop {
        let delivery = match receiver.recv::<Body<Value>>().await {
            Ok(delivery) => delivery,
            Err(_) => break,
        };
        let audience = hub_audience(&context);
        if !state.authorized(&audience) {
            let expired = state.expired(&audience);
            let why = if expired {
                "the service token expired: put a fresh one on $cbs"
            } else {
                "put a service token on $cbs first"
            };
            let _ = receiver
                .reject(&delivery, error(AmqpError::UnauthorizedAccess, why))
                .await;
            if expired {
                // As the hub does: the link goes with the token.
                let _ = receiver
                    .close_with_error(error(AmqpError::UnauthorizedAccess, why))
                    .await;
                return;
            }
            continue;
        }
        let outcome = match to_hub_message(delivery.message()) {
            Err(why) => Err(error(
                ErrorCondition::Custom(Symbol::from("com.microsoft:argument-error")),
                why,
            )),
            Ok((device_id, message)) => {
                let device = device_id.clone();
                match context
                    .hub
                    .call(move |s| s.enqueue_c2d(&device, message))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(match e.code {
                        ErrorCode::DeviceNotFound => error(AmqpError::NotFound, e.message),
                        ErrorCode::DeviceMaximumQueueDepthExceeded => {
                            error(AmqpError::ResourceLimitExceeded, e.message)
                        }
                        _ => error(
                            ErrorCondition::Custom(Symbol::from("com.microsoft:argument-error")),
                            e.message,
                        ),
                    }),
                    Err(_) => Err(error(AmqpError::InternalError, "the hub is shutting down")),
                }
            }
        };
        let _ = match outcome {
            Ok(()) => receiver.accept(&delivery).await,
            Err(e) => receiver.reject(&delivery, e).await,
        };
    }
    let _ = receiver.close().await;
}

/// Maps a service's AMQP message to the hub's model with the shared mapping: `to` names the
/// device (and is then left to the hub to set, in its own spelling).
fn to_hub_message(amqp: &AmqpMessage) -> Result<(String, Message), String> {
    let to = amqp
        .properties
        .as_ref()
        .and_then(|p| p.to.as_deref())
        .ok_or("the message has no `to` (/devices/{deviceId}/messages/devicebound)")?;
    let device_id = match Address::parse(to) {
        Ok(Address::DeviceBound {
            device_id,
            module_id: None,
        }) => device_id,
        Ok(Address::DeviceBound { .. }) => {
            return Err(format!(
                "`to` is {to}: IoT Hub sends cloud-to-device messages to devices, not modules"
            ));
        }
        Ok(_) => {
            return Err(format!(
                "`to` is not /devices/{{deviceId}}/messages/devicebound: {to}"
            ));
        }
        Err(e) => return Err(format!("`to`: {e}")),
    };
    let (body, properties, mut system) = from_amqp(amqp).map_err(|e| e.to_string())?.into_parts();
    system.to = None;
    let mut builder = Message::builder(body).system_properties(system);
    for (name, value) in properties {
        builder = builder.property(name, value);
    }
    let message = builder.build().map_err(|e| e.to_string())?;
    Ok((device_id, message))
}

/// A service-bound inbox (delivery feedback, file-upload notifications): one message per
/// batch taken under a new lock token — a JSON array of feedback records, or one file
/// notification — in a data section with the inbox's content type. The client's `accepted`
/// completes the batch; any other outcome, or none within the lock, returns it to the inbox.
async fn serve_inbox(
    mut sender: Sender,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
    kind: InboxKind,
) {
    let audience = hub_audience(&context);
    if !state.authorized(&audience) {
        let _ = sender
            .close_with_error(error(
                AmqpError::UnauthorizedAccess,
                "put a service token on $cbs first",
            ))
            .await;
        return;
    }
    let mut shutdown = context.shutdown.clone();
    loop {
        if state.expired(&audience) {
            // As the hub does: the link goes with the token.
            let _ = sender
                .close_with_error(error(
                    AmqpError::UnauthorizedAccess,
                    "the service token expired: put a fresh one on $cbs",
                ))
                .await;
            return;
        }
        let lock = crate::hub::queue::new_lock_token();
        let token = lock.clone();
        // The hub's lock starts now; the wait for a settlement ends a little before it does,
        // so a late `accepted` still finds the batch locked to this link.
        let taken_at = tokio::time::Instant::now();
        let batch = match context.hub.call(move |s| s.take_inbox(kind, token)).await {
            Ok(batch) => batch,
            Err(_) => break,
        };
        let Some(taken) = batch else {
            tokio::select! {
                _ = tokio::time::sleep(INBOX_POLL) => continue,
                _ = sender.on_detach() => break,
                _ = shutdown.changed() => break,
            }
        };
        let settle_by = taken_at + taken.lock.saturating_sub(SETTLE_MARGIN);
        let body = kind.body(taken.records).to_string();
        let hub_name = context.hostname.split('.').next().unwrap_or_default();
        let message = match Message::builder(body)
            .message_id(lock.clone())
            .content_type(kind.content_type())
            .user_id(hub_name)
            .build()
        {
            Ok(message) => to_amqp(&message),
            Err(e) => {
                // Records too large for one message: given back, and this link ends loudly.
                tracing::warn!(error = %e, inbox = kind.table(), "a batch does not fit in one message");
                let token = lock.clone();
                let _ = context
                    .hub
                    .call(move |s| s.abandon_inbox(kind, &token))
                    .await;
                break;
            }
        };
        // A reader that never settles (or gives no credit) holds the batch only for the
        // lock time, as on the hub; shutdown does not wait for it.
        let outcome = tokio::select! {
            outcome = sender.send(message) => outcome.map_err(|_| ()),
            _ = tokio::time::sleep_until(settle_by) => {
                tracing::debug!(inbox = kind.table(), "a batch was not settled within its lock; abandoning it");
                Ok(Outcome::Released(fe2o3_amqp_types::messaging::Released {}))
            }
            _ = shutdown.changed() => Err(()),
        };
        let accepted = matches!(outcome, Ok(Outcome::Accepted(_)));
        let token = lock.clone();
        if let Ok(Err(e)) = context
            .hub
            .call(move |s| {
                if accepted {
                    s.complete_inbox(kind, &token)
                } else {
                    s.abandon_inbox(kind, &token)
                }
            })
            .await
        {
            tracing::warn!(accepted, inbox = kind.table(), error = %e.message, "a batch could not be settled; it will be delivered again");
        }
        if outcome.is_err() {
            break;
        }
    }
    let _ = sender.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const HUB: &str = "hub.example";

    fn later() -> SystemTime {
        SystemTime::now() + Duration::from_secs(60)
    }

    #[test]
    fn an_expired_grant_no_longer_authorizes() {
        let (revoke, generation) = watch::channel(0);
        let state = ConnectionState::new(generation, Vec::new(), MAX_GRANTS);
        assert!(!state.authorized(HUB));
        assert!(!state.expired(HUB), "never authorized is not expired");
        state.authorize(HUB.into(), later()).unwrap();
        assert!(state.authorized(HUB));
        state
            .authorize(HUB.into(), SystemTime::now() - Duration::from_secs(1))
            .unwrap();
        assert!(
            !state.authorized(HUB),
            "after expiry, a fresh put-token is needed"
        );
        assert!(state.expired(HUB));
        // The fault ends a grant that is still in date.
        state.authorize(HUB.into(), later()).unwrap();
        revoke.send_modify(|g| *g += 1);
        assert!(state.expired(HUB));
        state.authorize(HUB.into(), later()).unwrap();
        assert!(state.authorized(HUB), "a token put after the fault holds");
    }

    #[test]
    fn grants_are_kept_per_audience_and_bounded() {
        let (_revoke, generation) = watch::channel(0);
        let state = ConnectionState::new(generation, Vec::new(), MAX_GRANTS);
        let device = format!("{HUB}/devices/d1");
        state.authorize(device.clone(), later()).unwrap();
        assert!(state.authorized(&device));
        assert!(
            !state.authorized(HUB),
            "a device's grant does not authorize the hub's links"
        );
        state.authorize(HUB.into(), later()).unwrap();
        state
            .authorize(device.clone(), SystemTime::now() - Duration::from_secs(1))
            .unwrap();
        assert!(state.expired(&device) && state.authorized(HUB));

        for i in 2..MAX_GRANTS {
            state
                .authorize(format!("{HUB}/devices/d{i}"), later())
                .unwrap();
        }
        // Full, but the expired grant makes room for one more; then no more.
        state
            .authorize(format!("{HUB}/devices/extra"), later())
            .unwrap();
        assert!(
            state
                .authorize(format!("{HUB}/devices/one-too-many"), later())
                .is_err()
        );
        // Renewing an audience it holds is always possible.
        state.authorize(HUB.into(), later()).unwrap();
    }

    /// What the `amqp_frames` fuzz target found, cut down: a client that attaches the `$cbs`
    /// links, sends a request (not a put-token: answered 400), gives the answer link credit
    /// and goes away without settling the answer.
    const UNSETTLED_CBS_ANSWER: [&str; 9] = [
        // SASL header; sasl-init MSSBCBS; AMQP header
        "414d515003010000",
        "0000001702010000005341c00a01a3074d535342434253",
        "414d515000010000",
        // open (container id, hostname localhost, max-frame-size 65536, channel-max 65535)
        "0000004702000000005310c03a04a12438366236323665622d306562642d346662362d396330642d39636231\
         3166363033366436a1096c6f63616c686f7374700001000060ffff",
        // begin
        "0000001f02000000005311c0120540437000010000700001000070ffffffff",
        // attach `$cbs` handle 0, role sender (the client's request link)
        "0000003d02000000005312c0300ba10b246362732d73656e646572434250005000005328c00701a1042463\
         6273005329c00701a1042463627340404344",
        // attach `$cbs` handle 1, role receiver, snd-settle-mode unsettled (the answer link)
        "0000004002000000005312c0330ba10d246362732d726563656976657252014150005000005328c00701a1\
         0424636273005329c00701a1042463627340404044",
        // transfer on handle 0, delivery 0, unsettled: amqp-value "x"
        "0000001f02000000005314c00c064343a00401000000434242005377a10178",
        // flow: 10000 credit on handle 1
        "0000002302000000005313c016074370000100005201700000ffff5201437000002710",
    ];

    fn from_hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn link_tasks_end_with_their_connection() {
        use tokio::io::AsyncWriteExt;
        let server = crate::fuzzing::AmqpServer::start().unwrap();
        let (client, server_side) = tokio::io::duplex(64 * 1024);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let _ = from_server.read_to_end(&mut answers).await;
        });
        let client = async move {
            for frame in UNSETTLED_CBS_ANSWER {
                to_server.write_all(&from_hex(frame)).await.unwrap();
                // The paused clock moves once the server is idle: it has acted on the frame.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            to_server.shutdown().await.unwrap();
        };
        tokio::join!(server.serve(server_side), client);
        let runtime = tokio::runtime::Handle::current();
        let all_ended = async {
            while runtime.metrics().num_alive_tasks() > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(600), all_ended)
            .await
            .expect("every task of the connection ends with it");
    }

    /// A put-token transfer on handle 0: the hub's audience, a token of `iothubowner` signed
    /// with the zero key (see `crate::fuzzing`), expiring in 2100.
    const PUT_TOKEN: &str = "000000f402000000005314c00c064343a00401000000434242005373c0020144005374c15706a1046e616d\
         65a11168747470733a2f2f6c6f63616c686f7374a1096f7065726174696f6ea1097075742d746f6b656ea1\
         0474797065a11f736572766963656275732e77696e646f77732e6e65743a736173746f6b656e005377a173\
         5368617265644163636573735369676e61747572652073723d6c6f63616c686f7374267369673d78364d4e\
         6b45636c45685a68626b69797a4542306742516d6f505a576942544c4d76757441576c6153393825334426\
         73653d3431303234343438303526736b6e3d696f746875626f776e6572";

    /// What the fuzz target found next: a second attach on a handle in use makes the session
    /// stop accepting links, and the emulator ends it; the client stays connected without
    /// answering the `end`. fe2o3's session engine spun until then (here: for ever, since
    /// the paused clock moves only once the runtime is idle).
    #[test]
    fn a_session_the_emulator_ends_does_not_spin() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                use tokio::io::AsyncWriteExt;
                let server = crate::fuzzing::AmqpServer::start().unwrap();
                let (client, server_side) = tokio::io::duplex(64 * 1024);
                let (mut from_server, mut to_server) = tokio::io::split(client);
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    let _ = from_server.read_to_end(&mut answers).await;
                });
                let client = async move {
                    // Headers, open, begin, the `$cbs` links, a put-token (the zero key's,
                    // expiring in 2100: the connection holds a grant and is not closed for
                    // want of one), credit; then the request link's handle attached again.
                    let frames = UNSETTLED_CBS_ANSWER[..7].iter().chain([
                        &PUT_TOKEN,
                        &UNSETTLED_CBS_ANSWER[8],
                        &UNSETTLED_CBS_ANSWER[5],
                    ]);
                    for frame in frames {
                        to_server.write_all(&from_hex(frame)).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    // Connected, silent, for a minute: the clock gets there only if the
                    // runtime goes idle.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    to_server.shutdown().await.unwrap();
                };
                tokio::join!(server.serve(server_side), client);
            });
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("the runtime went idle and the connection ended");
    }

    /// And next: a client that opens one session too many before its token is closed by the
    /// emulator and stays silent. fe2o3's connection engine spun until the client answered
    /// the `close`; now the stream ends once the emulator has sent it.
    #[test]
    fn a_connection_the_emulator_closes_does_not_spin() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                use tokio::io::AsyncWriteExt;
                let server = crate::fuzzing::AmqpServer::start().unwrap();
                let (client, server_side) = tokio::io::duplex(64 * 1024);
                let (mut from_server, mut to_server) = tokio::io::split(client);
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    let _ = from_server.read_to_end(&mut answers).await;
                });
                let client = async move {
                    // Plain header, open, then a begin on each of channels 0 to 5.
                    // The emulator may have closed before the last begin: writes may fail.
                    let _ = to_server.write_all(b"AMQP\x00\x01\x00\x00").await;
                    let _ = to_server
                        .write_all(&from_hex(UNSETTLED_CBS_ANSWER[3]))
                        .await;
                    for channel in 0..=MAX_SESSIONS_BEFORE_GRANT as u8 + 1 {
                        let mut begin = from_hex(UNSETTLED_CBS_ANSWER[4]);
                        begin[7] = channel;
                        let _ = to_server.write_all(&begin).await;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    let _ = to_server.shutdown().await;
                };
                tokio::join!(server.serve(server_side), client);
            });
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("the runtime went idle and the connection ended");
    }
}
