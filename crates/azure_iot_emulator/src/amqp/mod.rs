//! Service-side AMQP 1.0 on TLS (port 5671): cloud-to-device sends and delivery feedback.
//!
//! ```text
//!  TLS ─▶ protocol header? ──"AMQP 3 1 0 0"─▶ SASL (MSSBCBS, ANONYMOUS, PLAIN) ─┐
//!                          └─"AMQP 0 1 0 0"─▶ no SASL (Node SDKs) ──────────────┤
//!                                                                               ▼
//!        connection ─▶ sessions ─▶ links, by address:
//!          $cbs (in)                      put-token: a service SAS token authorizes the connection
//!          $cbs (out)                     put-token answers: status-code 200 (Node accepts only 200)
//!          /messages/devicebound (in)     C2D messages: enqueued, accepted; or rejected with the
//!                                         hub's condition (amqp:not-found, resource-limit-exceeded ...)
//!          /messages/serviceBound/feedback (out)  feedback batches; accepted = completed
//! ```
//!
//! Every client's variant is accepted: SASL or none; `amqps://host/...` or bare paths in any
//! case; message ids of any AMQP type. Links are granted receiver-settle-mode `first`, because
//! uamqp (the Python SDK) hangs if the server honours its request for `second`. Anything else a
//! client attaches to is detached with `amqp:not-implemented`, saying so.

mod prefixed;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use azure_iot_core::message::{AckMode, Message};
use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SaslAcceptor,
    SessionAcceptor, SupportedReceiverSettleModes,
};
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp_types::definitions::{self, AmqpError, ErrorCondition};
use fe2o3_amqp_types::messaging::{
    ApplicationProperties, Body, Data, MessageId, Outcome, Properties,
};
use fe2o3_amqp_types::primitives::{Array, Binary, SimpleValue, Symbol, Value};
use fe2o3_amqp_types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::hub::Hub;
use crate::hub::error::ErrorCode;
use crate::hub::policy::{Policies, Rights};
use crate::net::serve_tls;

/// How long a client has to send its protocol header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the feedback link looks for new records when it has none.
const FEEDBACK_POLL: Duration = Duration::from_millis(250);
/// How long a feedback batch handed to an AMQP reader stays locked waiting for its settlement
/// (IoT Hub's default lock for the feedback queue).
const FEEDBACK_LOCK: Duration = Duration::from_secs(60);

/// What every AMQP connection can reach.
pub(crate) struct AmqpContext {
    pub(crate) hub: Hub,
    pub(crate) policies: Arc<Policies>,
    pub(crate) hostname: Arc<str>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Moved on by `Fault::ExpireServiceTokens`.
    pub(crate) grant_generation: watch::Receiver<u64>,
}

/// Serves AMQP over TLS on `listener` until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    context: Arc<AmqpContext>,
    shutdown: watch::Receiver<bool>,
) {
    serve_tls(listener, tls, shutdown, move |stream, peer| {
        let context = context.clone();
        async move { run(stream, peer, context).await }
    })
    .await;
}

/// Per-connection state shared by its links.
struct ConnectionState {
    /// The grant of this connection (SASL PLAIN or CBS put-token): after its token expires,
    /// sends are refused until a fresh token is put, as on the hub.
    authorized: Mutex<Option<Grant>>,
    /// The hub's grant generation; `Fault::ExpireServiceTokens` moves it on, which ends every
    /// grant made before, as if its token had expired.
    generation: watch::Receiver<u64>,
    /// Where CBS answers go. uamqp sends its put-token before it has attached (or we have
    /// accepted) its `$cbs` receiver link, so answers wait here until that link exists.
    cbs: Mutex<CbsReplies>,
}

type AmqpMessage = fe2o3_amqp_types::messaging::Message<Body<Value>>;

#[derive(Default)]
struct CbsReplies {
    link: Option<mpsc::UnboundedSender<AmqpMessage>>,
    pending: Vec<AmqpMessage>,
}

/// What authorized a connection: its token's expiry, and the grant generation.
struct Grant {
    expiry: SystemTime,
    generation: u64,
}

impl ConnectionState {
    fn new(generation: watch::Receiver<u64>) -> Self {
        Self {
            authorized: Mutex::new(None),
            generation,
            cbs: Mutex::new(CbsReplies::default()),
        }
    }

    /// `Some(true)` while the grant holds, `Some(false)` once it expired, `None` if no token
    /// was ever put.
    fn grant_holds(&self) -> Option<bool> {
        let current = *self.generation.borrow();
        self.authorized
            .lock()
            .ok()?
            .as_ref()
            .map(|grant| SystemTime::now() < grant.expiry && grant.generation == current)
    }

    fn authorized(&self) -> bool {
        self.grant_holds() == Some(true)
    }

    /// Whether a token was put and has expired since (as opposed to never put).
    fn expired(&self) -> bool {
        self.grant_holds() == Some(false)
    }

    /// Authorizes the connection until `expiry` (its token's).
    fn authorize(&self, expiry: SystemTime) {
        let generation = *self.generation.borrow();
        if let Ok(mut slot) = self.authorized.lock() {
            *slot = Some(Grant { expiry, generation });
        }
    }
}

/// Serves one AMQP connection (from the TLS port or a WebSocket upgrade).
pub(crate) async fn run<S>(mut stream: S, peer: std::net::SocketAddr, context: Arc<AmqpContext>)
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let mut header = [0u8; 8];
    match tokio::time::timeout(HEADER_TIMEOUT, stream.read_exact(&mut header)).await {
        Ok(Ok(_)) if &header[..4] == b"AMQP" => {}
        _ => {
            tracing::debug!(%peer, "no AMQP protocol header; closing");
            return;
        }
    }
    let state = Arc::new(ConnectionState::new(context.grant_generation.clone()));
    let io = prefixed::Prefixed::new(header.to_vec(), stream);
    let container = format!("azure-iot-emulator:{}", context.hostname);
    let accepted = match header[4] {
        // SASL first (Python uamqp, C SDK).
        3 => {
            let sasl = HubSasl {
                context: context.clone(),
                state: state.clone(),
            };
            ConnectionAcceptor::builder()
                .container_id(container)
                .sasl_acceptor(sasl)
                .build()
                .accept(io)
                .await
        }
        // Plain AMQP, authentication by CBS only (Node SDKs).
        0 => ConnectionAcceptor::new(container).accept(io).await,
        other => {
            tracing::debug!(%peer, protocol = other, "unsupported AMQP protocol id; closing");
            return;
        }
    };
    let mut connection = match accepted {
        Ok(connection) => connection,
        Err(e) => {
            tracing::info!(%peer, error = %e, "AMQP connection refused");
            return;
        }
    };
    tracing::info!(%peer, "service AMQP connection opened");
    let mut shutdown = context.shutdown.clone();
    loop {
        tokio::select! {
            incoming = connection.next_incoming_session() => {
                let Some(incoming) = incoming else { break };
                match SessionAcceptor::new().accept_incoming_session(incoming, &mut connection).await {
                    Ok(session) => {
                        tokio::spawn(serve_session(session, state.clone(), context.clone()));
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "AMQP session refused");
                        break;
                    }
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    let _ = connection.close().await;
    tracing::info!(%peer, "service AMQP connection closed");
}

async fn serve_session(
    mut session: ListenerSessionHandle,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    let acceptor = LinkAcceptor::builder()
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(fe2o3_amqp_types::definitions::ReceiverSettleMode::First)
        .build();
    loop {
        match acceptor.accept(&mut session).await {
            Ok(LinkEndpoint::Receiver(receiver)) => {
                tokio::spawn(serve_inbound(receiver, state.clone(), context.clone()));
            }
            Ok(LinkEndpoint::Sender(sender)) => {
                tokio::spawn(serve_outbound(sender, state.clone(), context.clone()));
            }
            Err(e) => {
                tracing::debug!(error = %e, "AMQP session ended");
                break;
            }
        }
    }
    let _ = session.end().await;
}

/// The path of an address, lower-cased: `amqps://host/messages/deviceBound` → `/messages/devicebound`.
fn address_path(address: Option<&str>) -> String {
    let address = address.unwrap_or_default();
    let path = match address.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => address,
    };
    path.to_ascii_lowercase()
}

fn error(
    condition: impl Into<ErrorCondition>,
    description: impl Into<String>,
) -> definitions::Error {
    definitions::Error::new(condition, Some(description.into()), None)
}

/// Links the client sends on: `$cbs` requests and cloud-to-device messages.
async fn serve_inbound(receiver: Receiver, state: Arc<ConnectionState>, context: Arc<AmqpContext>) {
    let target = receiver
        .target()
        .as_ref()
        .and_then(|t| t.address.as_deref())
        .map(str::to_owned);
    let path = address_path(target.as_deref());
    match path.as_str() {
        "$cbs" | "/$cbs" => serve_cbs_requests(receiver, state, context).await,
        "/messages/devicebound" => serve_c2d(receiver, state, context).await,
        _ => {
            let _ = receiver
                .close_with_error(error(
                    AmqpError::NotImplemented,
                    format!(
                        "the emulator does not serve `{}` for sending",
                        target.unwrap_or_default()
                    ),
                ))
                .await;
        }
    }
}

/// Links the client receives on: `$cbs` answers and feedback.
async fn serve_outbound(
    mut sender: Sender,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    let source = sender
        .source()
        .as_ref()
        .and_then(|s| s.address.as_deref())
        .map(str::to_owned);
    let path = address_path(source.as_deref());
    match path.as_str() {
        "$cbs" | "/$cbs" => {
            let (tx, mut rx) = mpsc::unbounded_channel();
            if let Ok(mut cbs) = state.cbs.lock() {
                for reply in cbs.pending.drain(..) {
                    let _ = tx.send(reply);
                }
                cbs.link = Some(tx);
            }
            // The connection state holds the other end of `rx`: let go of it, or this task and
            // the state would keep each other alive after the connection ends.
            drop(state);
            let mut shutdown = context.shutdown.clone();
            loop {
                tokio::select! {
                    reply = rx.recv() => match reply {
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
        "/messages/servicebound/feedback" => serve_feedback(sender, state, context).await,
        _ => {
            let _ = sender
                .close_with_error(error(
                    AmqpError::NotImplemented,
                    format!(
                        "the emulator does not serve `{}` for receiving",
                        source.unwrap_or_default()
                    ),
                ))
                .await;
        }
    }
}

/// CBS put-token: validates a service SAS token and answers with status 200 or 401.
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
        let property = |name: &str| {
            message
                .application_properties
                .as_ref()
                .and_then(|p| p.get(name))
                .and_then(|v| match v {
                    SimpleValue::String(s) => Some(s.clone()),
                    SimpleValue::Symbol(s) => Some(s.0.clone()),
                    _ => None,
                })
        };
        let operation = property("operation").unwrap_or_default();
        let token = match &message.body {
            Body::Value(v) => match &v.0 {
                Value::String(s) => Some(s.clone()),
                _ => None,
            },
            Body::Data(batch) => batch
                .iter()
                .next()
                .map(|d| String::from_utf8_lossy(&d.0).into_owned()),
            _ => None,
        };
        let (status, description) = if operation != "put-token" {
            (400, format!("unsupported CBS operation `{operation}`"))
        } else {
            match token.as_deref().map(|t| check_service_token(&context, t)) {
                Some(Ok(expiry)) => {
                    state.authorize(expiry);
                    (200, "OK".to_owned())
                }
                Some(Err(why)) => (401, why),
                None => (400, "the put-token body is not a token string".to_owned()),
            }
        };
        let request_id = message
            .properties
            .as_ref()
            .and_then(|p| p.message_id.clone());
        let reply_to = message.properties.as_ref().and_then(|p| p.reply_to.clone());
        let mut properties = Properties::builder();
        if let Some(id) = request_id {
            properties = properties.correlation_id(id);
        }
        if let Some(to) = reply_to {
            properties = properties.to(to);
        }
        let reply = fe2o3_amqp_types::messaging::Message::builder()
            .properties(properties.build())
            .application_properties(
                ApplicationProperties::builder()
                    .insert("status-code", SimpleValue::Int(status))
                    .insert("status-description", SimpleValue::String(description))
                    .build(),
            )
            .body(Body::Value(fe2o3_amqp_types::messaging::AmqpValue(
                Value::Null,
            )))
            .build();
        if let Ok(mut cbs) = state.cbs.lock() {
            let undelivered = match &cbs.link {
                Some(link) => link.send(reply).err().map(|e| e.0),
                None => Some(reply),
            };
            // No (live) answer link yet: keep the answer for the next one the client attaches.
            if let Some(reply) = undelivered {
                cbs.link = None;
                cbs.pending.push(reply);
            }
        }
    }
    let _ = receiver.close().await;
}

/// Checks a token for service use: a policy (`skn`) with ServiceConnect, signature, expiry,
/// and a resource covering the hub. Returns the token's expiry.
fn check_service_token(context: &AmqpContext, token: &str) -> Result<SystemTime, String> {
    context
        .policies
        .authorize(
            Some(token),
            &context.hostname,
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
        ])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        let code = match init.mechanism.as_str() {
            "MSSBCBS" | "ANONYMOUS" => SaslCode::Ok,
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
                    (Some(user), Some(token)) if user.contains("@sas.root.") => {
                        match check_service_token(&self.context, &token) {
                            Ok(expiry) => {
                                self.state.authorize(expiry);
                                SaslCode::Ok
                            }
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
        if !state.authorized() {
            let expired = state.expired();
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

/// Maps a service's AMQP message to the hub's model: `to` names the device.
fn to_hub_message(
    amqp: &fe2o3_amqp_types::messaging::Message<Body<Value>>,
) -> Result<(String, Message), String> {
    let props = amqp.properties.clone().unwrap_or_default();
    let to = props
        .to
        .clone()
        .ok_or("the message has no `to` (/devices/{deviceId}/messages/devicebound)")?;
    let to = azure_iot_core::encoding::decode_component(&to).into_owned();
    let device_id = to
        .strip_prefix("/devices/")
        .and_then(|rest| rest.split('/').next())
        .filter(|d| !d.is_empty())
        .ok_or_else(|| format!("`to` is not /devices/{{deviceId}}/messages/devicebound: {to}"))?
        .to_owned();
    let body: Vec<u8> = match &amqp.body {
        Body::Data(batch) => batch.iter().flat_map(|d| d.0.to_vec()).collect(),
        Body::Value(v) => match &v.0 {
            Value::String(s) => s.clone().into_bytes(),
            Value::Binary(b) => b.to_vec(),
            Value::Null => Vec::new(),
            other => format!("{other:?}").into_bytes(),
        },
        _ => Vec::new(),
    };
    let mut builder = Message::builder(body);
    if let Some(id) = props.message_id.as_ref().map(message_id_text) {
        builder = builder.message_id(id);
    }
    if let Some(id) = props.correlation_id.as_ref().map(message_id_text) {
        builder = builder.correlation_id(id);
    }
    if let Some(user) = props.user_id.as_ref() {
        builder = builder.user_id(String::from_utf8_lossy(user).into_owned());
    }
    if let Some(ct) = props.content_type.as_ref() {
        builder = builder.content_type(ct.as_str());
    }
    if let Some(ce) = props.content_encoding.as_ref() {
        builder = builder.content_encoding(ce.as_str());
    }
    if let Some(expiry) = props.absolute_expiry_time.as_ref() {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(expiry.milliseconds()) * 1_000_000,
        )
        .map_err(|_| "absolute-expiry-time is out of range")?;
        builder = builder.expiry_time_utc(at);
    }
    for (key, value) in amqp.application_properties.iter().flat_map(|p| p.iter()) {
        let text = simple_text(value);
        if key == "iothub-ack" {
            builder = builder.ack(AckMode::parse(&text).ok_or_else(|| {
                format!("iothub-ack `{text}` is not none/positive/negative/full")
            })?);
        } else {
            builder = builder.property(key.clone(), text);
        }
    }
    let message = builder.build().map_err(|e| e.to_string())?;
    Ok((device_id, message))
}

fn message_id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => {
            let b: &[u8] = u.as_ref();
            format!(
                "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                b[0],
                b[1],
                b[2],
                b[3],
                b[4],
                b[5],
                b[6],
                b[7],
                b[8],
                b[9],
                b[10],
                b[11],
                b[12],
                b[13],
                b[14],
                b[15]
            )
        }
        MessageId::Binary(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

fn simple_text(value: &SimpleValue) -> String {
    match value {
        SimpleValue::String(s) => s.clone(),
        SimpleValue::Symbol(s) => s.0.clone(),
        SimpleValue::Bool(b) => b.to_string(),
        SimpleValue::Int(n) => n.to_string(),
        SimpleValue::Long(n) => n.to_string(),
        SimpleValue::Uint(n) => n.to_string(),
        SimpleValue::Ulong(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// Feedback batches: one message per batch, a JSON array in a data section; the client's
/// `accepted` completes the batch, any other outcome returns it to the queue.
async fn serve_feedback(
    mut sender: Sender,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    if !state.authorized() {
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
        if state.expired() {
            // As the hub does: the link goes with the token.
            let _ = sender
                .close_with_error(error(
                    AmqpError::UnauthorizedAccess,
                    "the service token expired: put a fresh one on $cbs",
                ))
                .await;
            return;
        }
        let lock = format!("amqp-{}", uuid_like());
        let token = lock.clone();
        let batch = match context.hub.call(move |s| s.take_feedback(token)).await {
            Ok(batch) => batch,
            Err(_) => break,
        };
        let Some(records) = batch else {
            tokio::select! {
                _ = tokio::time::sleep(FEEDBACK_POLL) => continue,
                _ = sender.on_detach() => break,
                _ = shutdown.changed() => break,
            }
        };
        let body = serde_json::Value::Array(records).to_string();
        let message = fe2o3_amqp_types::messaging::Message::builder()
            .properties(
                Properties::builder()
                    .message_id(lock.clone())
                    .content_type("application/vnd.microsoft.iothub.feedback.json")
                    .user_id(Binary::from(
                        context
                            .hostname
                            .split('.')
                            .next()
                            .unwrap_or_default()
                            .as_bytes()
                            .to_vec(),
                    ))
                    .build(),
            )
            .data(Data(Binary::from(body.into_bytes())))
            .build();
        // A reader that never settles (or gives no credit) holds the batch only for the
        // lock time, as on the hub; shutdown does not wait for it.
        let outcome = tokio::select! {
            outcome = sender.send(message) => outcome.map_err(|_| ()),
            _ = tokio::time::sleep(FEEDBACK_LOCK) => {
                tracing::debug!("a feedback batch was not settled within its lock; abandoning it");
                Ok(Outcome::Released(fe2o3_amqp_types::messaging::Released {}))
            }
            _ = shutdown.changed() => Err(()),
        };
        let accepted = matches!(outcome, Ok(Outcome::Accepted(_)));
        let token = lock.clone();
        let _ = context
            .hub
            .call(move |s| {
                if accepted {
                    s.complete_feedback(&token)
                } else {
                    s.abandon_feedback(&token)
                }
            })
            .await;
        if outcome.is_err() {
            break;
        }
    }
    let _ = sender.close().await;
}

fn uuid_like() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 16];
    let _ = SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_expired_grant_no_longer_authorizes() {
        let (revoke, generation) = watch::channel(0);
        let state = ConnectionState::new(generation);
        assert!(!state.authorized());
        assert!(!state.expired(), "never authorized is not expired");
        state.authorize(SystemTime::now() + Duration::from_secs(60));
        assert!(state.authorized());
        state.authorize(SystemTime::now() - Duration::from_secs(1));
        assert!(
            !state.authorized(),
            "after expiry, a fresh put-token is needed"
        );
        assert!(state.expired());
        // The fault ends a grant that is still in date.
        state.authorize(SystemTime::now() + Duration::from_secs(60));
        revoke.send_modify(|g| *g += 1);
        assert!(state.expired());
        state.authorize(SystemTime::now() + Duration::from_secs(60));
        assert!(state.authorized(), "a token put after the fault holds");
    }
}
