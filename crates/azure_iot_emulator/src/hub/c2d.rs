//! Cloud-to-device messages: per-device durable queues, delivery with locks and counts, and
//! the feedback the sender asked for.
//!
//! * A queue holds at most [`MAX_QUEUE_DEPTH`] messages (IoT Hub's limit); more is a 403.
//! * A message expires at its `absolute-expiry-time`, or [`DEFAULT_TTL`] after it was enqueued
//!   (at most [`MAX_TTL`]).
//! * Delivery locks a message to one connection and counts the attempt. The device completes
//!   it (the MQTT PUBACK); a connection that ends with messages locked releases them for
//!   redelivery. After [`MAX_DELIVERY_COUNT`] attempts a message is dead-lettered.
//! * Final states produce feedback when the sender asked (`iothub-ack`): `Success` for
//!   positive/full; `Expired`, `DeliveryCountExceeded`, `Rejected`, `Purged` for negative/full.
//!   Feedback records wait, durably, for a feedback receiver.

use std::collections::HashMap;

use azure_iot_core::datetime::{format_timestamp, parse_timestamp};
use azure_iot_core::message::{AckMode, Message};
use azure_iot_protocol::mqtt::PropertyBag;
use bytes::Bytes;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use super::HubState;
use super::devices::Push;
use super::error::{ErrorCode, HubError};
use super::inbox::{Inbox, InboxKind, InboxSettings};
use super::queue::{Lock, LockedQueue, Outcome, QueueError, Settle};
use crate::error::EmulatorError;
use crate::store::{C2dRow, Change, Store};
use crate::telemetry::properties::{
    PropertyValue, decode_properties, decode_system, encode_properties, encode_system,
};

/// Most messages waiting in one device's queue.
pub(crate) const MAX_QUEUE_DEPTH: usize = 50;
/// Delivery attempts before a message is dead-lettered.
pub(crate) const MAX_DELIVERY_COUNT: u32 = 10;
/// Time to live of a message that sets no expiry.
pub(crate) const DEFAULT_TTL: Duration = Duration::hours(1);
/// Longest time to live the hub allows.
pub(crate) const MAX_TTL: Duration = Duration::hours(48);
/// Most records in one feedback batch.
pub(crate) const FEEDBACK_BATCH: usize = 64;
/// How long a feedback batch stays locked to the receiver that took it.
pub(crate) const FEEDBACK_LOCK: std::time::Duration = std::time::Duration::from_secs(60);
/// How the feedback inbox hands records out (IoT Hub's feedback queue: lock 60 s, at most 10
/// deliveries).
pub(crate) const FEEDBACK_INBOX: InboxSettings = InboxSettings {
    lock: FEEDBACK_LOCK,
    batch: FEEDBACK_BATCH,
    max_deliveries: MAX_DELIVERY_COUNT,
};

/// A queued message: its stored row and what the hub reads from it often.
#[derive(Debug, Clone)]
struct Queued {
    row: C2dRow,
    expiry: OffsetDateTime,
    ack: AckMode,
    message_id: String,
}

/// A message on its way to a device.
#[derive(Debug, Clone)]
pub(crate) struct C2dDelivery {
    /// Identifies the message in its queue.
    pub(crate) id: u64,
    /// The lock the delivery is held under; presenting it settles the message.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) lock: Lock,
    /// The message with the hub's delivery properties (count, sequence number, lock token).
    pub(crate) message: Message,
}

/// Queues and feedback.
pub(crate) struct CloudToDevice {
    queues: HashMap<String, LockedQueue<Queued>>,
    next_id: u64,
    /// Feedback records waiting for (or locked to) a feedback receiver; a batch shares one
    /// token lock.
    pub(super) feedback: Inbox,
    /// Devices whose live connection receives messages as they arrive.
    subscribed: HashMap<String, u64>,
}

impl CloudToDevice {
    /// Loads queues and feedback from the store.
    pub(crate) fn load(store: &Store) -> Result<Self, EmulatorError> {
        let mut c2d = Self {
            queues: HashMap::new(),
            next_id: 0,
            feedback: Inbox::load(store, InboxKind::Feedback, FEEDBACK_INBOX)?,
            subscribed: HashMap::new(),
        };
        for row in store.c2d_rows()? {
            c2d.next_id = c2d.next_id.max(row.id);
            let message = stored_message(&row).map_err(|e| {
                EmulatorError::Storage(format!("C2D message {} is corrupt: {e}", row.id))
            })?;
            let (id, count) = (row.id, row.delivery_count);
            let queued = Queued {
                expiry: parse_timestamp(&row.expiry).unwrap_or_else(OffsetDateTime::now_utc),
                ack: message.system_properties().ack.unwrap_or_default(),
                message_id: message
                    .system_properties()
                    .message_id
                    .clone()
                    .unwrap_or_default(),
                row,
            };
            c2d.queues
                .entry(queued.row.device_id.clone())
                .or_default()
                .push_back(id, queued, count);
        }
        Ok(c2d)
    }

    /// Messages waiting for `device_id`.
    pub(crate) fn depth(&self, device_id: &str) -> usize {
        self.queues.get(device_id).map_or(0, LockedQueue::len)
    }
}

impl HubState {
    /// Enqueues `message` for `device_id`. Returns the message's sequence number in the queue.
    pub(crate) fn enqueue_c2d(
        &mut self,
        device_id: &str,
        message: Message,
    ) -> Result<u64, HubError> {
        self.record(device_id, None)?;
        self.sweep_c2d();
        if self.c2d.depth(device_id) >= MAX_QUEUE_DEPTH {
            return Err(HubError::new(
                ErrorCode::DeviceMaximumQueueDepthExceeded,
                format!("the queue of device {device_id} already holds {MAX_QUEUE_DEPTH} messages"),
            ));
        }
        let now = OffsetDateTime::now_utc();
        let expiry = message
            .system_properties()
            .expiry_time_utc
            .unwrap_or(now + DEFAULT_TTL)
            .min(now + MAX_TTL);
        let mut system = message.system_properties().clone();
        if system.to.is_none() {
            system.to = Some(format!("/devices/{device_id}/messages/deviceBound"));
        }
        system.expiry_time_utc = Some(expiry);
        let (body, properties, _) = message.into_parts();
        let mut builder = Message::builder(body).system_properties(system);
        for (k, v) in properties {
            builder = builder.property(k, v);
        }
        let message = builder
            .build()
            .map_err(|e| HubError::invalid(e.to_string()))?;
        let id = self.c2d.next_id + 1;
        let row = C2dRow {
            id,
            device_id: device_id.to_owned(),
            enqueued_time: format_timestamp(now),
            expiry: format_timestamp(expiry),
            delivery_count: 0,
            properties: stored_properties(&message),
            body: message.body().to_vec(),
        };
        self.store.apply(&[Change::PutC2d(&row)])?;
        self.c2d.next_id = id;
        let queued = Queued {
            expiry,
            ack: message.system_properties().ack.unwrap_or_default(),
            message_id: message
                .system_properties()
                .message_id
                .clone()
                .unwrap_or_default(),
            row,
        };
        self.c2d
            .queues
            .entry(device_id.to_owned())
            .or_default()
            .push_back(id, queued, 0);
        self.push_c2d(device_id);
        Ok(id)
    }

    /// Hands every deliverable message of `device_id` to its subscribed live connection.
    fn push_c2d(&mut self, device_id: &str) {
        if let Some(connection) = self.c2d.subscribed.get(device_id).copied() {
            let lock = Lock::Connection(connection);
            for delivery in self.deliver_c2d(device_id, &lock, None, usize::MAX) {
                self.links.push(
                    &azure_iot_protocol::Identity::device(device_id),
                    Push::CloudToDevice(Box::new(delivery)),
                );
            }
        }
    }

    /// A live connection of `device_id` subscribes (or stops) to cloud-to-device messages;
    /// subscribing returns the messages waiting, now locked to it.
    pub(crate) fn subscribe_c2d(
        &mut self,
        device_id: &str,
        connection: u64,
        on: bool,
    ) -> Vec<C2dDelivery> {
        if on {
            self.c2d.subscribed.insert(device_id.to_owned(), connection);
            self.sweep_c2d();
            self.deliver_c2d(device_id, &Lock::Connection(connection), None, usize::MAX)
        } else {
            if self.c2d.subscribed.get(device_id) == Some(&connection) {
                self.c2d.subscribed.remove(device_id);
            }
            Vec::new()
        }
    }

    /// Takes the oldest deliverable message of `device_id` under a new token lock that lasts
    /// `lock_for` (HTTPS receive, AMQP delivery). `None` when nothing is deliverable.
    pub(crate) fn take_c2d_locked(
        &mut self,
        device_id: &str,
        lock_for: std::time::Duration,
    ) -> Option<C2dDelivery> {
        self.sweep_c2d();
        let lock = Lock::Token(super::queue::new_lock_token());
        let until = std::time::Instant::now() + lock_for;
        self.deliver_c2d(device_id, &lock, Some(until), 1)
            .into_iter()
            .next()
    }

    /// Locks up to `max` deliverable messages of `device_id` to `lock` and counts the attempt:
    /// the new counts are stored first, then the locks are taken. A message that has used up
    /// its deliveries is dead-lettered instead.
    fn deliver_c2d(
        &mut self,
        device_id: &str,
        lock: &Lock,
        until: Option<std::time::Instant>,
        max: usize,
    ) -> Vec<C2dDelivery> {
        let now = std::time::Instant::now();
        let Some(queue) = self.c2d.queues.get_mut(device_id) else {
            return Vec::new();
        };
        let mut dead = Vec::new();
        let mut rows = Vec::new();
        for id in queue.deliverable(usize::MAX, now) {
            if rows.len() >= max {
                break;
            }
            let Some(entry) = queue.get(id) else { continue };
            if entry.delivery_count >= MAX_DELIVERY_COUNT {
                dead.push(id);
                continue;
            }
            let mut row = entry.item.row.clone();
            row.delivery_count = entry.delivery_count + 1;
            rows.push(row);
        }
        let changes: Vec<Change<'_>> = rows.iter().map(Change::PutC2d).collect();
        let stored = self.store.apply(&changes);
        for id in dead {
            // A failure is logged; the message stays and is dead-lettered on a later try.
            let _ = self.finish_c2d(device_id, id, Outcome::DeliveryCountExceeded);
        }
        if let Err(e) = stored {
            tracing::error!(error = %e, "could not record C2D delivery attempts; nothing delivered");
            return Vec::new();
        }
        let Some(queue) = self.c2d.queues.get_mut(device_id) else {
            return Vec::new();
        };
        let ids: Vec<u64> = rows.iter().map(|r| r.id).collect();
        queue.lock(&ids, lock, until);
        let mut deliveries = Vec::new();
        for row in rows {
            if queue.get(row.id).is_some_and(|e| e.is_locked()) {
                match delivered_message(&row, lock) {
                    Ok(message) => deliveries.push(C2dDelivery {
                        id: row.id,
                        lock: lock.clone(),
                        message,
                    }),
                    Err(e) => tracing::error!(error = %e.message, "stored C2D message unreadable"),
                }
            }
        }
        deliveries
    }

    /// Settles message `id` (or, without an id, every message) that `lock` holds for
    /// `device_id`: complete (feedback `Success`), reject (dead-letter, feedback `Rejected`) or
    /// abandon (delivered again). A lock that expired, was released, or never held the message
    /// is IoT Hub's `DeviceMessageLockLost`, and nothing changes.
    pub(crate) fn settle_c2d(
        &mut self,
        device_id: &str,
        lock: &Lock,
        id: Option<u64>,
        settle: Settle,
    ) -> Result<(), HubError> {
        let now = std::time::Instant::now();
        let held = self
            .c2d
            .queues
            .get(device_id)
            .ok_or(QueueError::LockLost)
            .and_then(|q| q.held_by(lock, id, now))
            .map_err(|QueueError::LockLost| {
                HubError::new(
                    ErrorCode::DeviceMessageLockLost,
                    "the message's lock was lost: it was settled already, its lock expired, or this lock never held it",
                )
            })?;
        for id in held {
            match settle {
                Settle::Complete => self.finish_c2d(device_id, id, Outcome::Success)?,
                Settle::Reject => self.finish_c2d(device_id, id, Outcome::Rejected)?,
                Settle::Abandon => {
                    if let Some(queue) = self.c2d.queues.get_mut(device_id) {
                        queue.unlock(id);
                    }
                }
            }
        }
        if settle == Settle::Abandon {
            self.push_c2d(device_id);
        }
        Ok(())
    }

    /// A connection ended (or was replaced): its locked messages become deliverable again,
    /// and go at once to the device's connection that is subscribed now, if any.
    pub(crate) fn release_c2d(&mut self, device_id: &str, connection: u64) {
        if self.c2d.subscribed.get(device_id) == Some(&connection) {
            self.c2d.subscribed.remove(device_id);
        }
        let released = self
            .c2d
            .queues
            .get_mut(device_id)
            .map(|q| q.unlock_all(&Lock::Connection(connection)))
            .unwrap_or_default();
        if !released.is_empty() {
            self.push_c2d(device_id);
        }
    }

    /// Removes expired messages (feedback `Expired`).
    pub(crate) fn sweep_c2d(&mut self) {
        let now = OffsetDateTime::now_utc();
        let expired: Vec<(String, u64)> = self
            .c2d
            .queues
            .iter()
            .flat_map(|(d, q)| {
                q.iter()
                    .filter(|m| m.item.expiry <= now)
                    .map(|m| (d.clone(), m.id))
            })
            .collect();
        for (device_id, id) in expired {
            // A failure is logged; the sweep tries again.
            let _ = self.finish_c2d(&device_id, id, Outcome::Expired);
        }
    }

    /// `DELETE /devices/{id}/commands`: removes every queued message (feedback `Purged`).
    pub(crate) fn purge_c2d(&mut self, device_id: &str) -> Result<u64, HubError> {
        self.record(device_id, None)?;
        let ids: Vec<u64> = self
            .c2d
            .queues
            .get(device_id)
            .map(|q| q.iter().map(|m| m.id).collect())
            .unwrap_or_default();
        for id in &ids {
            self.finish_c2d(device_id, *id, Outcome::Purged)?;
        }
        Ok(ids.len() as u64)
    }

    /// Drops all of a deleted device's messages without feedback.
    pub(super) fn forget_c2d(&mut self, device_id: &str) {
        self.c2d.queues.remove(device_id);
        self.c2d.subscribed.remove(device_id);
    }

    /// Removes message `id` from `device_id`'s queue in its final state and records the
    /// feedback its sender asked for, in one transaction.
    fn finish_c2d(&mut self, device_id: &str, id: u64, outcome: Outcome) -> Result<(), HubError> {
        let Some(queued) = self.c2d.queues.get(device_id).and_then(|q| q.get(id)) else {
            return Ok(());
        };
        let wants = match queued.item.ack {
            AckMode::Full => true,
            AckMode::Positive => outcome.is_positive(),
            AckMode::Negative => !outcome.is_positive(),
            AckMode::None => false,
        };
        let message_id = queued.item.message_id.clone();
        let generation = self
            .record(device_id, None)
            .map(|r| r.generation_id.clone())
            .unwrap_or_default();
        let record = wants.then(|| {
            json!({
                "originalMessageId": message_id,
                "enqueuedTimeUtc": format_timestamp(OffsetDateTime::now_utc()),
                "statusCode": outcome.as_str(),
                "description": outcome.as_str(),
                "deviceId": device_id,
                "deviceGenerationId": generation,
            })
        });
        let feedback_id = record.as_ref().map(|_| self.c2d.feedback.next_id());
        let text = record.as_ref().map(Value::to_string);
        let mut changes = vec![Change::DeleteC2d(id)];
        if let (Some(fid), Some(text)) = (feedback_id, text.as_deref()) {
            changes.push(Change::PutInbox(InboxKind::Feedback, fid, text));
        }
        if let Err(e) = self.store.apply(&changes) {
            tracing::error!(error = %e, "could not record the end of a C2D message");
            return Err(e.into());
        }
        if let Some(queue) = self.c2d.queues.get_mut(device_id) {
            queue.remove(id);
        }
        if let (Some(fid), Some(record)) = (feedback_id, record) {
            self.c2d.feedback.added(fid, record);
        }
        Ok(())
    }

    /// Messages waiting for `device_id` (the registry's `cloudToDeviceMessageCount`).
    pub(crate) fn c2d_count(&self, device_id: &str) -> u64 {
        self.c2d.depth(device_id) as u64
    }
}

/// A message's properties as stored in its row: the neutral JSON of the telemetry log
/// (`{"system": {...}, "properties": [...]}`, see `telemetry::properties`), not any
/// protocol's wire form.
fn stored_properties(message: &Message) -> String {
    let properties: Vec<(String, PropertyValue)> = message
        .properties()
        .iter()
        .map(|(k, v)| (k.clone(), PropertyValue::String(v.clone())))
        .collect();
    format!(
        "{{\"system\":{},\"properties\":{}}}",
        encode_system(message.system_properties()),
        encode_properties(&properties)
    )
}

/// The message a row holds. Rows written before the neutral encoding hold MQTT property-bag
/// text (it never starts with `{`: a bag escapes that character); they are still read.
fn stored_message(row: &C2dRow) -> Result<Message, String> {
    let body = Bytes::from(row.body.clone());
    if !row.properties.starts_with('{') {
        return PropertyBag::parse(&row.properties)
            .to_message(body)
            .map_err(|e| e.to_string());
    }
    let stored: Value =
        serde_json::from_str(&row.properties).map_err(|e| format!("stored properties: {e}"))?;
    let system = decode_system(&stored["system"].to_string())?;
    let properties = decode_properties(&stored["properties"].to_string())?;
    let mut builder = Message::builder(body).system_properties(system);
    for (name, value) in properties {
        builder = builder.property(name, crate::telemetry::properties::text_of(&value));
    }
    builder.build().map_err(|e| e.to_string())
}

/// The message as delivered: with the hub's delivery properties.
fn delivered_message(row: &C2dRow, lock: &Lock) -> Result<Message, HubError> {
    let message = stored_message(row).map_err(HubError::storage)?;
    let mut system = message.system_properties().clone();
    system.delivery_count = Some(row.delivery_count);
    system.sequence_number = Some(row.id);
    system.enqueued_time = parse_timestamp(&row.enqueued_time);
    system.lock_token = Some(match lock {
        Lock::Token(token) => token.clone(),
        Lock::Connection(_) => row.id.to_string(),
    });
    let (body, properties, _) = message.into_parts();
    let mut builder = Message::builder(body).system_properties(system);
    for (k, v) in properties {
        builder = builder.property(k, v);
    }
    builder
        .build()
        .map_err(|e| HubError::invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use azure_iot_core::message::{AckMode, Message};

    use super::*;
    use crate::hub::identity::IdentityBody;
    use crate::store::Store;

    fn hub_with_device() -> HubState {
        let mut state = HubState::load(Store::open(None).unwrap()).unwrap();
        state
            .put_identity("d1", None, IdentityBody::default(), None)
            .unwrap();
        state
    }

    fn enqueue(state: &mut HubState, id: &str) -> u64 {
        let message = Message::builder("hi")
            .message_id(id)
            .ack(AckMode::Full)
            .build()
            .unwrap();
        state.enqueue_c2d("d1", message).unwrap()
    }

    fn feedback_codes(state: &mut HubState) -> Vec<String> {
        let Some(batch) = state.take_inbox(InboxKind::Feedback, "t".into()) else {
            return Vec::new();
        };
        state.complete_inbox(InboxKind::Feedback, "t").unwrap();
        batch
            .records
            .iter()
            .map(|r| r["statusCode"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn token_lock_complete_gives_success_feedback() {
        let mut state = hub_with_device();
        enqueue(&mut state, "m1");
        let delivery = state
            .take_c2d_locked("d1", StdDuration::from_secs(60))
            .unwrap();
        assert_eq!(delivery.message.system_properties().delivery_count, Some(1));
        let token = delivery.message.system_properties().lock_token.clone();
        assert!(matches!(&delivery.lock, Lock::Token(t) if Some(t) == token.as_ref()));
        // Nothing else is deliverable while the message is locked.
        assert!(
            state
                .take_c2d_locked("d1", StdDuration::from_secs(60))
                .is_none()
        );
        state
            .settle_c2d("d1", &delivery.lock, Some(delivery.id), Settle::Complete)
            .unwrap();
        assert_eq!(state.c2d_count("d1"), 0);
        assert_eq!(feedback_codes(&mut state), ["Success"]);
        // A second settle with the same token finds nothing: lock lost, and nothing changes.
        let again = state.settle_c2d("d1", &delivery.lock, Some(delivery.id), Settle::Complete);
        assert_eq!(again.unwrap_err().code, ErrorCode::DeviceMessageLockLost);
    }

    #[test]
    fn abandon_redelivers_with_the_next_count_and_reject_dead_letters() {
        let mut state = hub_with_device();
        enqueue(&mut state, "m1");
        let first = state
            .take_c2d_locked("d1", StdDuration::from_secs(60))
            .unwrap();
        state
            .settle_c2d("d1", &first.lock, Some(first.id), Settle::Abandon)
            .unwrap();
        let second = state
            .take_c2d_locked("d1", StdDuration::from_secs(60))
            .unwrap();
        assert_eq!(second.id, first.id);
        assert_eq!(second.message.system_properties().delivery_count, Some(2));
        assert_ne!(second.lock, first.lock, "every delivery gets a new token");
        // The old token no longer settles the message.
        let stale = state.settle_c2d("d1", &first.lock, Some(first.id), Settle::Complete);
        assert_eq!(stale.unwrap_err().code, ErrorCode::DeviceMessageLockLost);
        state
            .settle_c2d("d1", &second.lock, Some(second.id), Settle::Reject)
            .unwrap();
        assert_eq!(state.c2d_count("d1"), 0);
        assert_eq!(feedback_codes(&mut state), ["Rejected"]);
    }

    #[test]
    fn an_expired_token_lock_settles_nothing_and_the_message_is_delivered_again() {
        let mut state = hub_with_device();
        enqueue(&mut state, "m1");
        let delivery = state.take_c2d_locked("d1", StdDuration::ZERO).unwrap();
        let late = state.settle_c2d("d1", &delivery.lock, Some(delivery.id), Settle::Complete);
        assert_eq!(late.unwrap_err().code, ErrorCode::DeviceMessageLockLost);
        assert_eq!(state.c2d_count("d1"), 1);
        let again = state
            .take_c2d_locked("d1", StdDuration::from_secs(60))
            .unwrap();
        assert_eq!(again.message.system_properties().delivery_count, Some(2));
    }

    #[test]
    fn connection_locks_are_released_when_the_connection_ends() {
        let mut state = hub_with_device();
        enqueue(&mut state, "m1");
        let delivered = state.subscribe_c2d("d1", 7, true);
        assert_eq!(delivered.len(), 1);
        // Another holder cannot settle it.
        let foreign = state.settle_c2d(
            "d1",
            &Lock::Connection(8),
            Some(delivered[0].id),
            Settle::Complete,
        );
        assert_eq!(foreign.unwrap_err().code, ErrorCode::DeviceMessageLockLost);
        state.release_c2d("d1", 7);
        let again = state.subscribe_c2d("d1", 8, true);
        assert_eq!(again[0].message.system_properties().delivery_count, Some(2));
        state
            .settle_c2d(
                "d1",
                &Lock::Connection(8),
                Some(again[0].id),
                Settle::Complete,
            )
            .unwrap();
        assert_eq!(feedback_codes(&mut state), ["Success"]);
    }

    #[test]
    fn a_replaced_connection_releases_its_locks_to_the_new_one_at_once() {
        let mut state = hub_with_device();
        enqueue(&mut state, "m1");
        let device = azure_iot_protocol::Identity::device("d1");
        let (old_pushes, _old_rx) = tokio::sync::mpsc::channel(8);
        let (old, _, _) = state.connect_device(device.clone(), old_pushes, false);
        assert_eq!(state.subscribe_c2d("d1", old, true).len(), 1);
        // The device reconnects before the old connection's task has closed it.
        let (new_pushes, _new_rx) = tokio::sync::mpsc::channel(8);
        let (new, _, _) = state.connect_device(device, new_pushes, false);
        let resumed = state.subscribe_c2d("d1", new, true);
        assert_eq!(
            resumed.len(),
            1,
            "the message is not stuck on the old connection"
        );
        // The old connection's late close changes nothing.
        state.release_c2d("d1", old);
        state
            .settle_c2d(
                "d1",
                &Lock::Connection(new),
                Some(resumed[0].id),
                Settle::Complete,
            )
            .unwrap();
        assert_eq!(state.c2d_count("d1"), 0);
    }

    #[test]
    fn released_messages_go_to_the_subscribed_connection_at_once() {
        let mut state = hub_with_device();
        enqueue(&mut state, "m1");
        let taken = state
            .take_c2d_locked("d1", StdDuration::from_secs(60))
            .unwrap();
        let device = azure_iot_protocol::Identity::device("d1");
        let (pushes, mut rx) = tokio::sync::mpsc::channel(8);
        let (connection, _, _) = state.connect_device(device, pushes, false);
        assert!(
            state.subscribe_c2d("d1", connection, true).is_empty(),
            "locked elsewhere"
        );
        state
            .settle_c2d("d1", &taken.lock, Some(taken.id), Settle::Abandon)
            .unwrap();
        assert!(matches!(rx.try_recv(), Ok(Push::CloudToDevice(_))));
    }

    #[test]
    fn the_delivery_count_is_stored_before_the_lock_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut state = HubState::load(Store::open(Some(dir.path())).unwrap()).unwrap();
            state
                .put_identity("d1", None, IdentityBody::default(), None)
                .unwrap();
            enqueue(&mut state, "m1");
            state
                .take_c2d_locked("d1", StdDuration::from_secs(60))
                .unwrap();
        }
        // After a crash the lock is gone, the attempt is not.
        let mut state = HubState::load(Store::open(Some(dir.path())).unwrap()).unwrap();
        let again = state
            .take_c2d_locked("d1", StdDuration::from_secs(60))
            .unwrap();
        assert_eq!(again.message.system_properties().delivery_count, Some(2));
    }

    #[test]
    fn the_last_delivery_then_dead_letters_with_delivery_count_exceeded() {
        let mut state = hub_with_device();
        enqueue(&mut state, "m1");
        for _ in 0..MAX_DELIVERY_COUNT {
            let d = state
                .take_c2d_locked("d1", StdDuration::from_secs(60))
                .unwrap();
            state
                .settle_c2d("d1", &d.lock, Some(d.id), Settle::Abandon)
                .unwrap();
        }
        assert!(
            state
                .take_c2d_locked("d1", StdDuration::from_secs(60))
                .is_none()
        );
        assert_eq!(state.c2d_count("d1"), 0);
        assert_eq!(feedback_codes(&mut state), ["DeliveryCountExceeded"]);
    }

    #[test]
    fn rows_hold_neutral_json_and_old_property_bag_rows_still_load() {
        let message = Message::builder("b")
            .message_id("m1")
            .property("k", "v w")
            .ack(AckMode::Full)
            .build()
            .unwrap();
        let mut row = C2dRow {
            id: 1,
            device_id: "d1".into(),
            enqueued_time: format_timestamp(OffsetDateTime::now_utc()),
            expiry: format_timestamp(OffsetDateTime::now_utc()),
            delivery_count: 0,
            properties: stored_properties(&message),
            body: b"b".to_vec(),
        };
        assert!(
            row.properties.starts_with("{\"system\":"),
            "{}",
            row.properties
        );
        assert!(!row.properties.contains("$."), "no MQTT wire names");
        let back = stored_message(&row).unwrap();
        assert_eq!(back.properties(), message.properties());
        assert_eq!(back.system_properties().message_id.as_deref(), Some("m1"));
        assert_eq!(back.system_properties().ack, Some(AckMode::Full));
        row.properties = PropertyBag::from_message(&message).format();
        assert_eq!(
            stored_message(&row).unwrap().properties(),
            message.properties()
        );
        row.properties = "{not json".into();
        assert!(stored_message(&row).is_err());
    }

    #[test]
    fn feedback_batches_are_token_locked() {
        let mut state = hub_with_device();
        enqueue(&mut state, "m1");
        state.purge_c2d("d1").unwrap();
        let fb = InboxKind::Feedback;
        let batch = state.take_inbox(fb, "a".into()).unwrap();
        assert_eq!(batch.records.len(), 1);
        assert!(state.take_inbox(fb, "b".into()).is_none(), "locked to `a`");
        assert!(state.complete_inbox(fb, "b").is_err());
        state.abandon_inbox(fb, "a").unwrap();
        assert!(state.complete_inbox(fb, "a").is_err(), "abandoned");
        let again = state.take_inbox(fb, "c".into()).unwrap();
        assert_eq!(again.records[0]["statusCode"], "Purged");
        state.complete_inbox(fb, "c").unwrap();
        assert!(state.take_inbox(fb, "d".into()).is_none());
    }
}
