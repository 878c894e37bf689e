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
//! Served so far: telemetry (`/devices/{d}[/modules/{m}]/messages/events`, client sending),
//! single messages and batches (`message-format` 0x80013700). A delivery is accepted once
//! every message in it is durable in the telemetry log; one that cannot be read is rejected
//! with `amqp:decode-error` and stores nothing. The other device links (C2D, twin, methods,
//! module inputs) are detached with `amqp:not-implemented` until they are served.
//!
//! Identities: a link's address names the identity; it needs a grant for that identity's own
//! audience (`{host}/devices/{d}[/modules/{m}]`). Every identity on a connection is its own
//! unit, so one connection multiplexes as many devices as it holds tokens for (the hub's
//! limit on tokens per connection, [`super::MAX_GRANTS`], bounds them).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use azure_iot_core::message::Message;
use azure_iot_protocol::Identity;
use azure_iot_protocol::amqp::{AmqpMessage, BATCH_FORMAT, decode_batch, from_amqp};
use fe2o3_amqp::link::Receiver;
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp_types::definitions::{self, AmqpError, LinkError};
use fe2o3_amqp_types::messaging::Body;
use fe2o3_amqp_types::primitives::Value;
use tokio::sync::{mpsc, oneshot, watch};

use super::{AmqpContext, ConnectionState, error};
use crate::device::{Acknowledge, Commit, DeviceConnection, Event};

/// Requests a unit's link tasks may have waiting.
const UNIT_QUEUE: usize = 16;

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
        message: Message,
        reply: oneshot::Sender<Commit>,
    },
}

impl Unit {
    /// Hands `message` to the device core; `None` if the unit has ended.
    async fn telemetry(&self, message: Message) -> Option<Commit> {
        let (reply, commit) = oneshot::channel();
        self.commands
            .send(Command::Telemetry { message, reply })
            .await
            .ok()?;
        commit.await.ok()
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
    let Some(grant) = state.device_grant(&identity_audience(context, identity)) else {
        return Err(error(
            AmqpError::UnauthorizedAccess,
            format!("no token for {identity} was put on this connection (or it has expired)"),
        ));
    };
    let connection = context
        .device
        .register(identity.clone(), grant, false, None)
        .await
        .map_err(|refusal| error(AmqpError::UnauthorizedAccess, refusal.detail))?;
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
    let reason = loop {
        let until_expiry = state
            .grant_expiry(&audience)
            .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default());
        tokio::select! {
            request = requests.recv() => match request {
                Some(Command::Telemetry { message, reply }) => {
                    let _ = reply.send(connection.send_telemetry(message).await);
                }
                None => break "its links were detached".to_owned(),
            },
            event = connection.next_event() => match event {
                Event::Close(reason) => break reason,
                // Nothing else is subscribed to by the links served so far.
                other => tracing::debug!(event = ?other, "device event with no AMQP link to carry it"),
            },
            _ = tokio::time::sleep(until_expiry.unwrap_or_default()) => {
                if state.grant_expiry(&audience).is_none() {
                    break "the token for this identity expired and was not renewed".to_owned();
                }
            }
        }
    };
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
    loop {
        let delivery = tokio::select! {
            delivery = receiver.recv::<Body<Value>>() => match delivery {
                Ok(delivery) => delivery,
                Err(_) => break,
            },
            _ = ended.changed() => {
                let reason = ended.borrow().clone().unwrap_or_default();
                let _ = receiver
                    .close_with_error(error(LinkError::DetachForced, reason))
                    .await;
                return;
            }
        };
        match store(&unit, &delivery).await {
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
    let _ = receiver.close().await;
}

/// Stores every message of `delivery` (one, or a batch) and waits until all are durable.
async fn store(
    unit: &Unit,
    delivery: &Delivery<Body<Value>>,
) -> Result<Acknowledge, definitions::Error> {
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
        .map(|m| from_amqp(m).map_err(|e| decode_error(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let ended = || {
        error(
            AmqpError::InternalError,
            "the device's connection ended before the message was stored",
        )
    };
    let mut commits = Vec::with_capacity(messages.len());
    for message in messages {
        commits.push(unit.telemetry(message).await.ok_or_else(ended)?);
    }
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
