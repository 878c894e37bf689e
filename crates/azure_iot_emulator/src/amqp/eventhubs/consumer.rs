//! A consumer link: one partition of one consumer group, from a start position, live.
//!
//! ```text
//!  attach ─▶ checks (grant, entity, group, partition, filter, position, epoch) ─▶ loop:
//!     read ≤ READ_BATCH events after the last sent (read-only pool) ─▶ send each when the
//!     link has credit (at most MAX_UNSETTLED unsettled) ─▶ none left: wait for the log's
//!     next commit, a steal, the client's detach or shutdown
//! ```
//!
//! Events go out settled, as Event Hubs sends them: a consumer link is attached with
//! snd-settle-mode `settled` whatever the client asked for ([`link_acceptor`]). The official
//! Python consumer asks for `unsettled` and never settles, so waiting for its settlements
//! would stop every partition after [`MAX_UNSETTLED`] events.
//!
//! Memory per link is bounded whatever the client does: at most [`READ_BATCH`] events read
//! ahead of the credit, at most [`MAX_UNSETTLED`] deliveries awaiting the client's
//! settlement (none while links send settled), and the generation ids of at most
//! [`MAX_GENERATIONS`] senders.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;

use fe2o3_amqp::acceptor::{
    LinkAcceptor, SupportedReceiverSettleModes, SupportedSenderSettleModes,
};
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::link::Sender;
use fe2o3_amqp::link::delivery::DeliveryFut;
use fe2o3_amqp_types::definitions::{
    self, AmqpError, ErrorCondition, LinkError, ReceiverSettleMode, Role, SenderSettleMode,
};
use fe2o3_amqp_types::messaging::{Outcome, Source, Target};
use fe2o3_amqp_types::performatives::Attach;
use fe2o3_amqp_types::primitives::{Symbol, Value};
use futures_util::FutureExt;

use super::super::{AmqpContext, ConnectionState, error, truncated};
use super::epoch::{EpochRefusal, Registration};
use super::filter::start_position;
use super::{EventHubs, event};
use crate::telemetry::{EventPosition, TelemetryEvent};

/// Events read from the log at a time (ahead of the link's credit).
pub(crate) const READ_BATCH: usize = 32;
/// Deliveries sent and not yet settled by the client before the link waits for settlements.
pub(crate) const MAX_UNSETTLED: usize = 256;
/// Senders whose generation id a link remembers.
const MAX_GENERATIONS: usize = 256;
/// The link property carrying a receiver's epoch (owner level).
pub(crate) const EPOCH_PROPERTY: &str = "com.microsoft:epoch";

/// Whether `attach` opens a consumer link (the client receives from an Event Hubs partition
/// address): one to accept with [`link_acceptor`].
pub(in crate::amqp) fn is_consumer_attach(attach: &Attach) -> bool {
    attach.role == Role::Receiver
        && attach
            .source
            .as_deref()
            .and_then(|s| s.address.as_deref())
            .and_then(super::address::EhAddress::parse)
            .is_some_and(|a| matches!(a, super::address::EhAddress::Consumer { .. }))
}

/// The acceptor of consumer links: snd-settle-mode `settled` (Event Hubs settles on send),
/// receivers settling first, messages up to `max_message_size` from the client.
pub(in crate::amqp) fn link_acceptor(max_message_size: u64) -> LinkAcceptor<SourceFn, TargetFn> {
    LinkAcceptor::builder()
        .supported_sender_settle_modes(SupportedSenderSettleModes::Settled)
        .fallback_sender_settle_mode(SenderSettleMode::Settled)
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        .max_message_size(max_message_size)
        .build()
}

/// The acceptor's (default) source and target checks.
type SourceFn = fn(Source) -> Option<Source>;
type TargetFn = fn(Target) -> Option<Target>;

/// Event Hubs' condition for a bad argument.
fn argument_error(description: impl Into<String>) -> definitions::Error {
    error(
        ErrorCondition::Custom(Symbol::from("com.microsoft:argument-error")),
        description,
    )
}

/// A delivery sent and not yet settled by the client.
type Unsettled = Pin<Box<DeliveryFut<Result<Outcome, SendError>>>>;

/// What a consumer link names (from its source address).
pub(crate) struct Consumer {
    /// The entity as written.
    pub(crate) entity: String,
    /// The consumer group as written.
    pub(crate) consumer_group: String,
    /// The partition as written.
    pub(crate) partition: String,
    /// The receiver asked for last-enqueued-event information on every event
    /// (`com.microsoft:enable-receiver-runtime-metric`).
    pub(crate) runtime_metric: bool,
}

/// A checked consumer: where it reads and from where.
struct Opened {
    partition: u32,
    runtime_metric: bool,
    start: EventPosition,
    registration: Registration,
}

/// Serves a consumer link until the client detaches, a higher epoch takes over, the token
/// expires or the emulator shuts down.
pub(in crate::amqp) async fn serve_consumer(
    mut sender: Sender,
    consumer: Consumer,
    state: Arc<ConnectionState>,
    context: Arc<AmqpContext>,
) {
    let eh = context.eventhubs.clone();
    let opened = match open(&sender, &consumer, &state, &eh).await {
        Ok(opened) => opened,
        Err(refusal) => {
            tracing::debug!(reason = ?refusal.description, "Event Hubs consumer refused");
            let _ = sender.close_with_error(refusal).await;
            return;
        }
    };
    let ending = stream(&mut sender, opened, &state, &context, &eh).await;
    let _ = match ending {
        Some(refusal) => sender.close_with_error(refusal).await,
        None => sender.close().await,
    };
}

/// Checks the link; the refusal is the Event Hubs error it is detached with.
async fn open(
    sender: &Sender,
    consumer: &Consumer,
    state: &ConnectionState,
    eh: &Arc<EventHubs>,
) -> Result<Opened, definitions::Error> {
    let key = eh.grant_key();
    if !state.authorized(&key) {
        let why = if state.expired(&key) {
            "the token for the event hub expired: put a fresh one on $cbs"
        } else {
            "put a token for the event hub on $cbs first (a policy with ServiceConnect)"
        };
        return Err(error(AmqpError::UnauthorizedAccess, why));
    }
    if !eh.is_entity(&consumer.entity) {
        return Err(error(
            AmqpError::NotFound,
            format!(
                "The messaging entity '{}/{}' could not be found (this endpoint's entity is '{}').",
                eh.hostname,
                truncated(&consumer.entity),
                eh.entity
            ),
        ));
    }
    let group = eh.consumer_group(&consumer.consumer_group).ok_or_else(|| {
        error(
            AmqpError::NotFound,
            format!(
                "The messaging entity '{}/ConsumerGroups/{}' could not be found (consumer groups: {}).",
                eh.entity,
                truncated(&consumer.consumer_group),
                eh.consumer_groups.join(", ")
            ),
        )
    })?;
    let count = eh.telemetry.partition_count();
    let partition = consumer
        .partition
        .parse::<u32>()
        .ok()
        .filter(|p| *p < count)
        .ok_or_else(|| {
            error(
                AmqpError::NotFound,
                format!(
                    "The messaging entity '{}/ConsumerGroups/{group}/Partitions/{}' could not be found (partitions 0 to {}).",
                    eh.entity,
                    truncated(&consumer.partition),
                    count.saturating_sub(1)
                ),
            )
        })?;
    let asked = start_position(sender.source().as_ref().and_then(|s| s.filter.as_ref()))
        .map_err(|e| argument_error(e.to_string()))?;
    let start = resolve(eh, partition, asked).await?;
    let epoch = sender.properties(|p| {
        p.as_ref()
            .and_then(|fields| fields.get(&Symbol::from(EPOCH_PROPERTY)))
            .and_then(|value| match value {
                Value::Long(n) => Some(*n),
                Value::Int(n) => Some(i64::from(*n)),
                Value::Ulong(n) => i64::try_from(*n).ok(),
                Value::Uint(n) => Some(i64::from(*n)),
                _ => None,
            })
    });
    let registration =
        eh.epochs
            .register(group, partition, epoch)
            .map_err(|refusal| match refusal {
                EpochRefusal::Stolen { .. } => error(LinkError::Stolen, refusal.to_string()),
                EpochRefusal::Quota { .. } => {
                    error(AmqpError::ResourceLimitExceeded, refusal.to_string())
                }
            })?;
    Ok(Opened {
        partition,
        runtime_metric: consumer.runtime_metric,
        start,
        registration,
    })
}

/// The position to read from: `Latest` pinned to the partition's last event now; a
/// sequence number or offset beyond the end refused as Event Hubs does.
async fn resolve(
    eh: &EventHubs,
    partition: u32,
    asked: EventPosition,
) -> Result<EventPosition, definitions::Error> {
    let info = eh
        .telemetry
        .partition_info(partition)
        .await
        .map_err(|e| error(AmqpError::InternalError, e.to_string()))?;
    let last = info.last_enqueued_sequence_number;
    let out_of_range = |what: String| {
        error(
            ErrorCondition::Custom(Symbol::from("com.microsoft:argument-out-of-range")),
            what,
        )
    };
    match asked {
        EventPosition::Latest => Ok(EventPosition::SequenceNumber {
            number: last,
            inclusive: false,
        }),
        EventPosition::SequenceNumber { number, inclusive } => {
            let first = if inclusive {
                number
            } else {
                number.saturating_add(1)
            };
            if first > last.saturating_add(1) {
                return Err(out_of_range(format!(
                    "The supplied sequence number '{number}' is invalid. The last sequence number in the system is '{last}'."
                )));
            }
            Ok(asked)
        }
        EventPosition::Offset { offset, .. } => {
            let last_offset: i64 = info.last_enqueued_offset.parse().unwrap_or(-1);
            if offset > last_offset {
                return Err(out_of_range(format!(
                    "The supplied offset '{offset}' is invalid. The last offset in the system is '{last_offset}'."
                )));
            }
            Ok(asked)
        }
        other => Ok(other),
    }
}

/// Sends events until the link ends; `Some` error to detach with.
async fn stream(
    sender: &mut Sender,
    opened: Opened,
    state: &ConnectionState,
    context: &AmqpContext,
    eh: &EventHubs,
) -> Option<definitions::Error> {
    let Opened {
        partition,
        runtime_metric,
        mut start,
        mut registration,
    } = opened;
    let key = eh.grant_key();
    let mut newest = eh.telemetry.watch();
    let mut shutdown = context.shutdown.clone();
    let mut unsettled: VecDeque<Unsettled> = VecDeque::new();
    let mut generations: HashMap<(String, Option<String>), Option<String>> = HashMap::new();
    let stolen = |epoch: Option<i64>| {
        error(
            LinkError::Stolen,
            format!(
                "a receiver with a higher epoch ({}) now reads this partition",
                epoch.map_or_else(|| "?".to_owned(), |e| e.to_string())
            ),
        )
    };
    loop {
        if state.expired(&key) {
            return Some(error(
                AmqpError::UnauthorizedAccess,
                "the token for the event hub expired: put a fresh one on $cbs",
            ));
        }
        newest.borrow_and_update();
        let events = match eh
            .telemetry
            .read_partition(partition, start, READ_BATCH)
            .await
        {
            Ok(events) => events,
            Err(e) => return Some(error(AmqpError::InternalError, e.to_string())),
        };
        if events.is_empty() {
            tokio::select! {
                changed = newest.changed() => if changed.is_err() { return None },
                _ = registration.stolen.changed() => return Some(stolen(*registration.stolen.borrow())),
                _ = sender.on_detach() => return None,
                _ = shutdown.changed() => return None,
            }
            continue;
        }
        // The partition's newest event, for receivers that track it (once per batch).
        let runtime = if runtime_metric {
            match eh.telemetry.partition_info(partition).await {
                Ok(info) => Some(event::runtime_metric(&info)),
                Err(e) => return Some(error(AmqpError::InternalError, e.to_string())),
            }
        } else {
            None
        };
        for event in events {
            start = EventPosition::SequenceNumber {
                number: event.partition_sequence_number,
                inclusive: false,
            };
            let generation = generation_id(context, &mut generations, &event).await;
            let mut message = event::to_message(&event, generation.as_deref());
            message.delivery_annotations.clone_from(&runtime);
            // Settled deliveries drop out; with too many unsettled, wait for the oldest.
            while unsettled
                .front_mut()
                .is_some_and(|f| f.as_mut().now_or_never().is_some())
            {
                unsettled.pop_front();
            }
            if unsettled.len() >= MAX_UNSETTLED
                && let Some(oldest) = unsettled.pop_front()
            {
                tokio::select! {
                    _ = oldest => {}
                    _ = registration.stolen.changed() => return Some(stolen(*registration.stolen.borrow())),
                    _ = shutdown.changed() => return None,
                }
            }
            tokio::select! {
                sent = sender.send_batchable(message) => match sent {
                    Ok(delivery) => unsettled.push_back(Box::pin(delivery)),
                    Err(e) => {
                        tracing::debug!(error = %e, "Event Hubs consumer link ended");
                        return None;
                    }
                },
                _ = registration.stolen.changed() => return Some(stolen(*registration.stolen.borrow())),
                _ = shutdown.changed() => return None,
            }
        }
    }
}

/// The registry generation id of the event's sender, looked up once per sender and link.
async fn generation_id(
    context: &AmqpContext,
    cache: &mut HashMap<(String, Option<String>), Option<String>>,
    event: &TelemetryEvent,
) -> Option<String> {
    let key = (event.device_id.clone(), event.module_id.clone());
    if let Some(known) = cache.get(&key) {
        return known.clone();
    }
    let (device, module) = key.clone();
    let found = context
        .hub
        .call(move |s| s.generation_id(&device, module.as_deref()))
        .await
        .ok()
        .flatten();
    if cache.len() >= MAX_GENERATIONS {
        cache.clear();
    }
    cache.insert(key, found.clone());
    found
}
