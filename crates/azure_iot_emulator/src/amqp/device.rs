//! Device and module links over AMQP, on the device core.
//!
//! ```text
//!  $cbs put-token (device or module audience, device key or DeviceConnect policy token)
//!      └─▶ DeviceCore::authenticate ─▶ a grant on the connection, kept with its audience
//!  first link of an identity ─▶ DeviceCore::register ─▶ a *unit*: one task that owns the
//!      identity's DeviceConnection for this AMQP connection and serves its links
//!  link tasks ──Command──▶ unit ──▶ device core (telemetry commit, …)
//!  unit ends (all its links gone, token expired and not renewed, replaced, deleted)
//!      └─▶ its links are detached with the reason (`amqp:link:detach-forced`)
//! ```
//!
//! Served so far:
//!
//! * telemetry (`/devices/{d}[/modules/{m}]/messages/events`, client sending), single
//!   messages and batches (`message-format` 0x80013700). A delivery is accepted once every
//!   message in it is durable in the telemetry log; one that cannot be read is rejected with
//!   `amqp:decode-error` and stores nothing;
//! * cloud-to-device (`/devices/{d}/messages/devicebound`, client receiving): the messages
//!   waiting, then each as it arrives, locked to the connection; the client's outcome
//!   settles it on the token-locked queue: `accepted` completes, `rejected` dead-letters
//!   (feedback `Rejected`), `released` and `modified` abandon (delivered again, its count
//!   kept). One message is outstanding at a time. A message that arrives while the link's
//!   queue is full is abandoned at once and comes back later.
//!
//! * the twin (`/devices/{d}[/modules/{m}]/twin`, a link pair): requests on the client's
//!   sender (message annotation `operation` GET, PATCH with `resource`
//!   `/properties/reported`, PUT or DELETE with `resource`
//!   `/notifications/twin/properties/desired`), answers on its receiver with the request's
//!   `correlation-id` and annotations `status` (int) and `version` (long, after a PATCH),
//!   the body one data section or none; desired-property patches, once subscribed, on the
//!   same receiver without a correlation id (annotations `resource` `/properties/desired`
//!   and `version`). The newest twin receiver of an identity carries its answers.
//!
//! * direct methods (`/devices/{d}[/modules/{m}]/methods/devicebound`, a link pair):
//!   requests on the client's receiver with application property `IoThub-methodname`, the
//!   payload as one data section and a `correlation-id` that is an AMQP uuid (C rejects
//!   anything else, C# parses it as a GUID); answers on the client's sender with the same
//!   correlation id (as a uuid or its text) and `IoThub-status` (int). The uuid carries the
//!   unit's request id after a random per-unit prefix, so no table of pending ids is kept;
//!   an answer that names no pending call of this connection is dropped, as the hub does.
//!
//! Module inputs are detached with `amqp:not-implemented` until they are served.
//!
//! Identities: a link's address names the identity; it needs a grant for that identity's own
//! audience (`{host}/devices/{d}[/modules/{m}]`), from a put-token or SASL PLAIN, or, for an
//! X.509 device, the TLS client certificate it connected with, checked at its first link (so
//! an X.509 device must attach a link within the connect deadline). Every identity on a connection is its own
//! unit, so one connection multiplexes as many devices as it holds tokens for (the hub's
//! limit on tokens per connection, `Limits::max_amqp_tokens`, bounds them).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use azure_iot_core::message::Message;
use azure_iot_protocol::Identity;
use azure_iot_protocol::amqp::device::{
    self as twin, annotation_text, data_bytes, method_request, twin_message,
};
use azure_iot_protocol::amqp::{AmqpMessage, BATCH_FORMAT, decode_batch, from_amqp, to_amqp};
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp_types::definitions::{self, AmqpError, LinkError};
use fe2o3_amqp_types::messaging::{Body, Outcome};
use fe2o3_amqp_types::primitives::Value;
use tokio::sync::{mpsc, oneshot, watch};

use super::{AmqpContext, ConnectionState, error};
use crate::device::{Acknowledge, Commit, DeviceConnection, Event, Feature, twin_error_body};
use crate::hub::c2d::C2dDelivery;
use crate::hub::error::HubError;
use crate::hub::queue::Settle;

/// How long a certificate authenticates an X.509 device's links on a connection (its
/// certificate does not expire with a token; the connection's life bounds it).
const CERTIFICATE_GRANT: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);
/// Telemetry deliveries of one link stored but not yet durable; beyond that the link reads
/// nothing more until the oldest is settled.
const TELEMETRY_IN_FLIGHT: usize = 256;
/// Requests a unit's link tasks may have waiting.
const UNIT_QUEUE: usize = 16;
/// Cloud-to-device messages a C2D link may have waiting to be sent.
const C2D_QUEUE: usize = 16;
/// Messages a twin or method link may have waiting to be sent; beyond that they are dropped
/// (the device's twin requests time out and it resyncs by GET; a method call times out).
const LINK_QUEUE: usize = 16;

/// The units of one AMQP connection, by identity.
#[derive(Default)]
pub(super) struct Units(tokio::sync::Mutex<HashMap<Identity, Entry>>);

/// What the connection keeps of a unit: a weak handle (the unit ends when its last link
/// does) and its end.
struct Entry {
    commands: mpsc::WeakSender<Command>,
    ended: watch::Receiver<Option<String>>,
}

/// A link's handle on its identity's unit.
struct Unit {
    commands: mpsc::Sender<Command>,
    /// `Some(reason)` once the unit has ended.
    ended: watch::Receiver<Option<String>>,
}

/// What a link asks of its unit.
enum Command {
    /// Store a telemetry message; the reply is its commit.
    Telemetry {
        message: Box<Message>,
        /// The application properties with their AMQP types.
        typed: Vec<(String, crate::telemetry::PropertyValue)>,
        reply: oneshot::Sender<Commit>,
    },
    /// Deliver cloud-to-device messages on `link` from now on; the reply is those waiting.
    AttachC2d {
        link: mpsc::Sender<C2dDelivery>,
        reply: oneshot::Sender<Vec<C2dDelivery>>,
    },
    /// Answer twin requests, and carry desired patches once subscribed, on `link`.
    AttachTwin { link: mpsc::Sender<AmqpMessage> },
    /// A twin request; its answer goes out on the twin link.
    Twin(Box<AmqpMessage>),
    /// Carry method requests on `link` from now on.
    AttachMethods { link: mpsc::Sender<AmqpMessage> },
    /// A method answer from the device.
    MethodAnswer(Box<AmqpMessage>),
    /// Settle a cloud-to-device message this connection received.
    Settle {
        id: u64,
        settle: Settle,
        reply: oneshot::Sender<Result<(), HubError>>,
    },
}

impl Unit {
    /// Hands `message` to the device core; `None` if the unit has ended.
    async fn telemetry(
        &self,
        message: Message,
        typed: Vec<(String, crate::telemetry::PropertyValue)>,
    ) -> Option<Commit> {
        let (reply, commit) = oneshot::channel();
        self.commands
            .send(Command::Telemetry {
                message: Box::new(message),
                typed,
                reply,
            })
            .await
            .ok()?;
        commit.await.ok()
    }

    /// Starts cloud-to-device delivery on `link`; the messages waiting, or `None` if the unit
    /// has ended.
    async fn attach_c2d(&self, link: mpsc::Sender<C2dDelivery>) -> Option<Vec<C2dDelivery>> {
        let (reply, waiting) = oneshot::channel();
        self.commands
            .send(Command::AttachC2d { link, reply })
            .await
            .ok()?;
        waiting.await.ok()
    }

    /// Settles message `id`; `Err` says why it could not be (its lock is lost).
    async fn settle(&self, id: u64, settle: Settle) -> Result<(), String> {
        let (reply, settled) = oneshot::channel();
        let ended = || "the device's connection has ended".to_owned();
        self.commands
            .send(Command::Settle { id, settle, reply })
            .await
            .map_err(|_| ended())?;
        settled.await.map_err(|_| ended())?.map_err(|e| e.message)
    }
}

/// The unit of `identity` on this connection, opened with its grant if it has none yet.
async fn unit(
    state: &Arc<ConnectionState>,
    context: &AmqpContext,
    identity: &Identity,
) -> Result<Unit, definitions::Error> {
    let mut units = state.units.0.lock().await;
    if let Some(entry) = units.get(identity)
        && let Some(commands) = entry.commands.upgrade()
        && entry.ended.borrow().is_none()
    {
        return Ok(Unit {
            commands,
            ended: entry.ended.clone(),
        });
    }
    let audience = identity_audience(context, identity);
    let grant = match state.device_grant(&audience) {
        Some(grant) => grant,
        // An X.509 device: its certificate (from the TLS handshake) is its credential.
        None if !state.certificates.is_empty() => {
            let grant = context
                .device
                .authenticate(identity, None, &state.certificates)
                .await
                .map_err(|refusal| error(AmqpError::UnauthorizedAccess, refusal.detail))?;
            let expiry = grant
                .expires_at
                .unwrap_or_else(|| SystemTime::now() + CERTIFICATE_GRANT);
            state
                .grant(audience, expiry, Some(grant.clone()))
                .map_err(|why| error(AmqpError::ResourceLimitExceeded, why))?;
            grant
        }
        None => {
            return Err(error(
                AmqpError::UnauthorizedAccess,
                format!("no token for {identity} was put on this connection (or it has expired)"),
            ));
        }
    };
    let connection = context
        .device
        .register(identity.clone(), grant, false, None)
        .await
        .map_err(|refusal| error(AmqpError::UnauthorizedAccess, refusal.detail))?;
    tracing::info!(%identity, "device connected over AMQP");
    let (commands, requests) = mpsc::channel(UNIT_QUEUE);
    let (end, ended) = watch::channel(None);
    tokio::spawn(run_unit(
        connection,
        requests,
        end,
        state.clone(),
        identity_audience(context, identity),
    ));
    units.insert(
        identity.clone(),
        Entry {
            commands: commands.downgrade(),
            ended: ended.clone(),
        },
    );
    Ok(Unit { commands, ended })
}

/// Grants `identity` on this connection from the SAS token it gave as its SASL PLAIN
/// password, as a put-token for its audience would.
pub(super) async fn grant_plain(
    state: &ConnectionState,
    context: &AmqpContext,
    identity: &Identity,
    token: &str,
) -> Result<(), String> {
    let grant = context
        .device
        .authenticate(identity, Some(token), &[])
        .await
        .map_err(|refusal| refusal.detail)?;
    let expiry = grant
        .expires_at
        .ok_or_else(|| "the token has no expiry".to_owned())?;
    state.grant(identity_audience(context, identity), expiry, Some(grant))
}

/// The grant key of `identity`'s own audience (as [`super::grant_key`] makes it).
fn identity_audience(context: &AmqpContext, identity: &Identity) -> String {
    let mut resource = format!(
        "{}/devices/{}",
        context.hostname.to_ascii_lowercase(),
        identity.device_id()
    );
    if let Some(module) = identity.module_id() {
        resource.push_str("/modules/");
        resource.push_str(module);
    }
    resource
}

/// A unit: serves its links' requests on the identity's device connection until its links
/// are gone, its token expires without renewal, or the hub ends the connection (replaced,
/// identity deleted or disabled). Its end, with the reason, is published on `end`.
async fn run_unit(
    mut connection: DeviceConnection,
    mut requests: mpsc::Receiver<Command>,
    end: watch::Sender<Option<String>>,
    state: Arc<ConnectionState>,
    audience: String,
) {
    let mut c2d: Option<mpsc::Sender<C2dDelivery>> = None;
    let mut twin: Option<mpsc::Sender<AmqpMessage>> = None;
    // Twin answers to requests that arrived before the answer link reached the unit: the
    // two links attach independently, and a client may send as soon as both are attached.
    let mut unsent_twin_answers: Vec<AmqpMessage> = Vec::new();
    let mut methods: Option<mpsc::Sender<AmqpMessage>> = None;
    let method_ids = MethodIds::new();
    let reason = loop {
        let until_expiry = state
            .grant_expiry(&audience)
            .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default());
        tokio::select! {
            request = requests.recv() => match request {
                Some(Command::Telemetry { message, typed, reply }) => {
                    let _ = reply.send(connection.send_telemetry(*message, Some(typed)).await);
                }
                Some(Command::AttachC2d { link, reply }) => {
                    c2d = Some(link);
                    let _ = reply.send(connection.subscribe(Feature::CloudToDevice, true).await);
                }
                Some(Command::AttachTwin { link }) => {
                    for answer in unsent_twin_answers.drain(..) {
                        if link.try_send(answer).is_err() {
                            tracing::debug!("a twin answer did not fit its new link; dropped");
                        }
                    }
                    twin = Some(link);
                }
                Some(Command::AttachMethods { link }) => {
                    methods = Some(link);
                    connection.subscribe(Feature::Methods, true).await;
                }
                Some(Command::MethodAnswer(answer)) => {
                    let request_id = answer
                        .properties
                        .as_ref()
                        .and_then(|p| p.correlation_id.as_ref())
                        .and_then(|id| method_ids.request_id(id));
                    match request_id {
                        Some(request_id) => {
                            let status = method_status(&answer);
                            connection.answer_method(&request_id, status, &data_bytes(&answer));
                        }
                        None => tracing::debug!("a method answer names no call of this connection; dropped"),
                    }
                }
                Some(Command::Twin(request)) => {
                    let answer = twin_answer(&mut connection, &request).await;
                    match &twin {
                        Some(link) => {
                            if link.try_send(answer).is_err() {
                                tracing::debug!("a twin answer did not fit its link; dropped");
                            }
                        }
                        None if unsent_twin_answers.len() < LINK_QUEUE => unsent_twin_answers.push(answer),
                        None => tracing::debug!("a twin answer had no link to take it; dropped"),
                    }
                }
                Some(Command::Settle { id, settle, reply }) => {
                    let _ = reply.send(connection.settle_c2d(id, settle).await);
                }
                None => break "its links were detached".to_owned(),
            },
            event = connection.next_event() => match event {
                Event::Close(reason) => break reason,
                Event::MethodRequest { name, request_id, payload } => {
                    let request = method_request(method_ids.correlation_id(&request_id), &name, payload);
                    // No link to take it: the call times out at the hub, as for a device that
                    // does not answer.
                    if methods.as_ref().is_none_or(|link| link.try_send(request).is_err()) {
                        tracing::debug!("a method request had no link to take it; dropped");
                    }
                }
                Event::DesiredPatch { version, body } => {
                    let patch = twin_message(None, None, Some((twin::DESIRED, version)), Some(body));
                    if twin.as_ref().is_none_or(|link| link.try_send(patch).is_err()) {
                        tracing::debug!("a desired patch had no twin link to take it; dropped");
                    }
                }
                Event::CloudToDevice(delivery) => {
                    let undelivered = match &c2d {
                        Some(link) => link.try_send(*delivery).err().map(|e| match e {
                            mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d) => d,
                        }),
                        None => Some(*delivery),
                    };
                    // No link to take it now: back to the queue, to be delivered again.
                    if let Some(delivery) = undelivered {
                        if c2d.as_ref().is_some_and(mpsc::Sender::is_closed) {
                            c2d = None;
                            connection.subscribe(Feature::CloudToDevice, false).await;
                        }
                        let _ = connection.settle_c2d(delivery.id, Settle::Abandon).await;
                    }
                }
            },
            _ = tokio::time::sleep(until_expiry.unwrap_or_default()) => {
                if state.grant_expiry(&audience).is_none() {
                    break "the token for this identity expired and was not renewed".to_owned();
                }
            }
        }
    };
    tracing::info!(%audience, %reason, "device disconnected from AMQP");
    let _ = end.send(Some(reason));
    connection.close().await;
}

/// The telemetry link of `identity` (the client sends): each delivery is accepted once
/// every message in it is durable, rejected if it cannot be read.
pub(super) async fn serve_telemetry(
    mut receiver: Receiver,
    identity: Identity,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    let unit = match unit(&state, &context, &identity).await {
        Ok(unit) => unit,
        Err(refusal) => {
            let _ = receiver.close_with_error(refusal).await;
            return;
        }
    };
    drop(state);
    let mut ended = unit.ended.clone();
    // Deliveries stored but not yet durable, in arrival order: many are in flight at once
    // (the log commits them in groups), each settled as soon as it is durable.
    let mut storing = futures_util::stream::FuturesOrdered::new();
    loop {
        let room = storing.len() < TELEMETRY_IN_FLIGHT;
        tokio::select! {
            delivery = receiver.recv::<Body<Value>>(), if room => match delivery {
                Ok(delivery) => match submit(&unit, &delivery).await {
                    Ok(commits) => storing.push_back(async move {
                        let stored = durable(commits).await;
                        (delivery, stored)
                    }),
                    Err(refusal) => {
                        let _ = receiver.reject(&delivery, refusal).await;
                    }
                },
                Err(_) => break,
            },
            Some((delivery, stored)) = futures_util::StreamExt::next(&mut storing), if !storing.is_empty() => {
                match stored {
                    Ok(Acknowledge::Now) => {
                        let _ = receiver.accept(&delivery).await;
                    }
                    Ok(Acknowledge::After(delay)) => {
                        tokio::time::sleep(delay).await;
                        let _ = receiver.accept(&delivery).await;
                    }
                    // An injected fault: the device never hears back and sends the message again.
                    Ok(Acknowledge::Never) => {}
                    Err(refusal) => {
                        let _ = receiver.reject(&delivery, refusal).await;
                    }
                }
            }
            _ = ended.changed() => {
                let _ = receiver.close_with_error(detached(&ended)).await;
                return;
            }
        }
    }
    let _ = receiver.close().await;
}

/// Hands every message of `delivery` (one, or a batch) to the log; nothing is stored unless
/// all of them can be read.
async fn submit(
    unit: &Unit,
    delivery: &Delivery<Body<Value>>,
) -> Result<Vec<Commit>, definitions::Error> {
    let decode_error = |e: String| error(AmqpError::DecodeError, e);
    let batch;
    let messages: Vec<&AmqpMessage> = if *delivery.message_format() == Some(BATCH_FORMAT) {
        batch = decode_batch(delivery.message()).map_err(|e| decode_error(e.to_string()))?;
        batch.iter().collect()
    } else {
        vec![delivery.message()]
    };
    // Every message is read before any is stored: a batch lands whole or not at all.
    let messages = messages
        .into_iter()
        .map(|m| {
            let message = from_amqp(m).map_err(|e| decode_error(e.to_string()))?;
            let typed = typed_properties(m, &message);
            Ok((message, typed))
        })
        .collect::<Result<Vec<_>, definitions::Error>>()?;
    let ended = || {
        error(
            AmqpError::InternalError,
            "the device's connection ended before the message was stored",
        )
    };
    let mut commits = Vec::with_capacity(messages.len());
    for (message, typed) in messages {
        commits.push(unit.telemetry(message, typed).await.ok_or_else(ended)?);
    }
    Ok(commits)
}

/// The application properties of `message` (read from `amqp`) with the types the device sent
/// them with; a type the log does not keep is stored as the text the message has.
fn typed_properties(
    amqp: &AmqpMessage,
    message: &Message,
) -> Vec<(String, crate::telemetry::PropertyValue)> {
    let sent = amqp.application_properties.as_ref();
    message
        .properties()
        .iter()
        .map(|(name, text)| {
            let value = sent
                .and_then(|p| p.get(name))
                .and_then(super::typed::from_simple)
                .unwrap_or_else(|| crate::telemetry::PropertyValue::String(text.clone()));
            (name.clone(), value)
        })
        .collect()
}

/// Waits until every commit of a delivery is durable; says when to acknowledge it.
async fn durable(mut commits: Vec<Commit>) -> Result<Acknowledge, definitions::Error> {
    let mut acknowledge = Acknowledge::Now;
    for commit in &mut commits {
        commit
            .durable()
            .await
            .map_err(|e| error(AmqpError::InternalError, e))?;
        acknowledge = commit.acknowledge();
    }
    Ok(acknowledge)
}

/// The cloud-to-device link of `identity` (the client receives): each message in turn, its
/// outcome settling it on the queue.
pub(super) async fn serve_c2d(
    mut sender: Sender,
    identity: Identity,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    let unit = match unit(&state, &context, &identity).await {
        Ok(unit) => unit,
        Err(refusal) => {
            let _ = sender.close_with_error(refusal).await;
            return;
        }
    };
    drop(state);
    let (link, mut arriving) = mpsc::channel(C2D_QUEUE);
    let Some(waiting) = unit.attach_c2d(link).await else {
        let _ = sender.close().await;
        return;
    };
    let mut waiting: VecDeque<C2dDelivery> = waiting.into();
    let mut ended = unit.ended.clone();
    let to = format!("/devices/{}/messages/devicebound", identity.device_id());
    loop {
        let delivery = match waiting.pop_front() {
            Some(delivery) => delivery,
            None => tokio::select! {
                delivery = arriving.recv() => match delivery {
                    Some(delivery) => delivery,
                    None => break,
                },
                _ = ended.changed() => {
                    let _ = sender.close_with_error(detached(&ended)).await;
                    return;
                }
                _ = sender.on_detach() => return,
            },
        };
        let mut message = to_amqp(&delivery.message);
        let properties = message.properties.get_or_insert_with(Default::default);
        if properties.to.is_none() {
            properties.to = Some(to.clone());
        }
        let settle = match sender.send(message).await {
            Ok(Outcome::Accepted(_)) => Settle::Complete,
            Ok(Outcome::Rejected(_)) => Settle::Reject,
            Ok(Outcome::Released(_) | Outcome::Modified(_)) => Settle::Abandon,
            // No outcome (the link or connection went): the message comes back later.
            _ => {
                let _ = unit.settle(delivery.id, Settle::Abandon).await;
                break;
            }
        };
        if let Err(why) = unit.settle(delivery.id, settle).await {
            tracing::debug!(%identity, %why, "a cloud-to-device settlement over AMQP was refused");
        }
    }
    let _ = sender.close().await;
}

/// What the hub answers a twin request: status, the new version after a PATCH, and a body.
async fn twin_answer(connection: &mut DeviceConnection, request: &AmqpMessage) -> AmqpMessage {
    let correlation = request
        .properties
        .as_ref()
        .and_then(|p| p.correlation_id.clone());
    let operation = annotation_text(request, twin::OPERATION);
    let resource = annotation_text(request, twin::RESOURCE);
    let failed = |e: HubError| (e.code.status(), None, Some(twin_error_body(&e)));
    let (status, version, body) = match (operation.as_deref(), resource.as_deref()) {
        (Some("GET"), _) => match connection.get_twin().await {
            Ok(twin) => (200, None, Some(twin)),
            Err(e) => failed(e),
        },
        (Some("PATCH"), Some("/properties/reported")) => {
            match connection.patch_reported(&data_bytes(request)).await {
                Ok(version) => (204, Some(version), None),
                Err(e) => failed(e),
            }
        }
        (Some(op @ ("PUT" | "DELETE")), Some(twin::DESIRED_NOTIFICATIONS)) => {
            connection
                .subscribe(Feature::DesiredPatches, op == "PUT")
                .await;
            (200, None, None)
        }
        _ => failed(HubError::invalid(format!(
            "unknown twin operation {:?} on {:?}",
            operation.unwrap_or_default(),
            resource.unwrap_or_default()
        ))),
    };
    let status = i32::from(status);
    twin_message(correlation, Some(status), version.map(|v| ("", v)), body)
}

/// Method correlation ids: an AMQP uuid whose first 8 bytes are random per unit and whose
/// last 8 are the device connection's (decimal) request id, so an answer's id gives the
/// request id back without a table.
struct MethodIds {
    prefix: [u8; 8],
}

impl MethodIds {
    fn new() -> Self {
        let random = uuid::Uuid::new_v4();
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&random.as_bytes()[..8]);
        Self { prefix }
    }

    /// The correlation id for `request_id` (request ids are decimal counters; any other id
    /// gets 0, which no answer will match).
    fn correlation_id(&self, request_id: &str) -> fe2o3_amqp_types::messaging::MessageId {
        let counter: u64 = request_id.parse().unwrap_or(0);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.prefix);
        bytes[8..].copy_from_slice(&counter.to_be_bytes());
        fe2o3_amqp_types::messaging::MessageId::Uuid(bytes.into())
    }

    /// The request id an answer's correlation id names (a uuid, or its text as Node may send
    /// it), if it is one of this unit's.
    fn request_id(&self, id: &fe2o3_amqp_types::messaging::MessageId) -> Option<String> {
        use fe2o3_amqp_types::messaging::MessageId;
        let bytes: [u8; 16] = match id {
            MessageId::Uuid(uuid) => uuid.clone().into(),
            MessageId::String(text) => *uuid::Uuid::parse_str(text).ok()?.as_bytes(),
            _ => return None,
        };
        if bytes[..8] != self.prefix {
            return None;
        }
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&bytes[8..]);
        Some(u64::from_be_bytes(counter).to_string())
    }
}

/// A method answer's `IoThub-status` (500 when missing or unreadable, so the caller sees
/// that the device answered badly rather than a made-up success).
fn method_status(answer: &AmqpMessage) -> i32 {
    twin::method_status(answer).unwrap_or(500)
}

/// The twin request link of `identity` (the client sends): each request is accepted and
/// answered by the unit on the twin answer link.
pub(super) async fn serve_twin_requests(
    receiver: Receiver,
    identity: Identity,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    serve_from_client(receiver, identity, state, context, Command::Twin).await;
}

/// The twin answer link of `identity` (the client receives): answers and desired patches.
pub(super) async fn serve_twin_answers(
    sender: Sender,
    identity: Identity,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    serve_to_client(sender, identity, state, context, |link| {
        Command::AttachTwin { link }
    })
    .await;
}

/// The method request link of `identity` (the client receives requests).
pub(super) async fn serve_method_requests(
    sender: Sender,
    identity: Identity,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    serve_to_client(sender, identity, state, context, |link| {
        Command::AttachMethods { link }
    })
    .await;
}

/// The method answer link of `identity` (the client sends answers).
pub(super) async fn serve_method_answers(
    receiver: Receiver,
    identity: Identity,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    serve_from_client(receiver, identity, state, context, Command::MethodAnswer).await;
}

/// Why a unit's links are detached once it has ended.
fn detached(ended: &watch::Receiver<Option<String>>) -> definitions::Error {
    let reason = ended.borrow().clone().unwrap_or_default();
    error(LinkError::DetachForced, reason)
}

/// A link the client sends requests on (twin requests, method answers): each message is
/// accepted and handed to the unit as `command(message)`.
async fn serve_from_client(
    mut receiver: Receiver,
    identity: Identity,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
    command: fn(Box<AmqpMessage>) -> Command,
) {
    let unit = match unit(&state, &context, &identity).await {
        Ok(unit) => unit,
        Err(refusal) => {
            let _ = receiver.close_with_error(refusal).await;
            return;
        }
    };
    drop(state);
    let mut ended = unit.ended.clone();
    loop {
        let delivery = tokio::select! {
            delivery = receiver.recv::<Body<Value>>() => match delivery {
                Ok(delivery) => delivery,
                Err(_) => break,
            },
            _ = ended.changed() => {
                let _ = receiver.close_with_error(detached(&ended)).await;
                return;
            }
        };
        let _ = receiver.accept(&delivery).await;
        let message = Box::new(delivery.into_message());
        if unit.commands.send(command(message)).await.is_err() {
            break;
        }
    }
    let _ = receiver.close().await;
}

/// A link the unit sends on (twin answers and desired patches, method requests): attached
/// to the unit with `attach(channel)`, then every message the unit puts on the channel goes
/// out in order.
async fn serve_to_client(
    mut sender: Sender,
    identity: Identity,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
    attach: fn(mpsc::Sender<AmqpMessage>) -> Command,
) {
    let unit = match unit(&state, &context, &identity).await {
        Ok(unit) => unit,
        Err(refusal) => {
            let _ = sender.close_with_error(refusal).await;
            return;
        }
    };
    drop(state);
    let (link, mut outgoing) = mpsc::channel(LINK_QUEUE);
    if unit.commands.send(attach(link)).await.is_err() {
        let _ = sender.close().await;
        return;
    }
    let mut ended = unit.ended.clone();
    loop {
        tokio::select! {
            message = outgoing.recv() => match message {
                Some(message) => {
                    if sender.send(message).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            _ = ended.changed() => {
                let _ = sender.close_with_error(detached(&ended)).await;
                return;
            }
            _ = sender.on_detach() => return,
        }
    }
    let _ = sender.close().await;
}
