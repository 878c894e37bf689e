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

use std::collections::{HashMap, VecDeque};

use azure_iot_core::datetime::{format_timestamp, parse_timestamp};
use azure_iot_core::message::{AckMode, Message};
use azure_iot_protocol::mqtt::PropertyBag;
use bytes::Bytes;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use super::HubState;
use super::devices::Push;
use super::error::{ErrorCode, HubError};
use crate::error::EmulatorError;
use crate::store::{C2dRow, Change, Store};

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

/// A queued message.
#[derive(Debug, Clone)]
struct Queued {
    row: C2dRow,
    expiry: OffsetDateTime,
    ack: AckMode,
    message_id: String,
    /// The connection the message is locked to, while delivered and not completed.
    locked_by: Option<u64>,
}

/// A message on its way to a device.
#[derive(Debug, Clone)]
pub(crate) struct C2dDelivery {
    /// Identifies the message for completion.
    pub(crate) id: u64,
    pub(crate) message: Message,
}

/// Queues and feedback.
#[derive(Default)]
pub(crate) struct CloudToDevice {
    queues: HashMap<String, VecDeque<Queued>>,
    next_id: u64,
    feedback: VecDeque<(u64, Value)>,
    /// Feedback records handed out and not yet completed, by lock token, with the time the
    /// lock ends (after which they are delivered again).
    feedback_locked: HashMap<String, (std::time::Instant, Vec<(u64, Value)>)>,
    /// Devices whose live connection receives messages as they arrive.
    subscribed: HashMap<String, u64>,
}

impl CloudToDevice {
    /// Loads queues and feedback from the store.
    pub(crate) fn load(store: &Store) -> Result<Self, EmulatorError> {
        let mut c2d = Self::default();
        for row in store.c2d_rows()? {
            c2d.next_id = c2d.next_id.max(row.id);
            let message = PropertyBag::parse(&row.properties)
                .to_message(Bytes::from(row.body.clone()))
                .map_err(|e| {
                    EmulatorError::Storage(format!("C2D message {} is corrupt: {e}", row.id))
                })?;
            let queued = Queued {
                expiry: parse_timestamp(&row.expiry).unwrap_or_else(OffsetDateTime::now_utc),
                ack: message.system_properties().ack.unwrap_or_default(),
                message_id: message
                    .system_properties()
                    .message_id
                    .clone()
                    .unwrap_or_default(),
                locked_by: None,
                row,
            };
            c2d.queues
                .entry(queued.row.device_id.clone())
                .or_default()
                .push_back(queued);
        }
        for (id, record) in store.feedback_rows()? {
            c2d.next_id = c2d.next_id.max(id);
            let value = serde_json::from_str(&record).map_err(|e| {
                EmulatorError::Storage(format!("feedback record {id} is corrupt: {e}"))
            })?;
            c2d.feedback.push_back((id, value));
        }
        Ok(c2d)
    }

    /// Messages waiting for `device_id`.
    pub(crate) fn depth(&self, device_id: &str) -> usize {
        self.queues.get(device_id).map_or(0, VecDeque::len)
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
        self.c2d.next_id += 1;
        let id = self.c2d.next_id;
        let row = C2dRow {
            id,
            device_id: device_id.to_owned(),
            enqueued_time: format_timestamp(now),
            expiry: format_timestamp(expiry),
            delivery_count: 0,
            properties: PropertyBag::from_message(&message).format(),
            body: message.body().to_vec(),
        };
        self.store.apply(&[Change::PutC2d(&row)])?;
        let queued = Queued {
            expiry,
            ack: message.system_properties().ack.unwrap_or_default(),
            message_id: message
                .system_properties()
                .message_id
                .clone()
                .unwrap_or_default(),
            locked_by: None,
            row,
        };
        self.c2d
            .queues
            .entry(device_id.to_owned())
            .or_default()
            .push_back(queued);
        if let Some(connection) = self.c2d.subscribed.get(device_id).copied() {
            for delivery in self.take_c2d(device_id, connection) {
                self.links.push(
                    &azure_iot_protocol::Identity::device(device_id),
                    Push::CloudToDevice(Box::new(delivery)),
                );
            }
        }
        Ok(id)
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
            self.take_c2d(device_id, connection)
        } else {
            if self.c2d.subscribed.get(device_id) == Some(&connection) {
                self.c2d.subscribed.remove(device_id);
            }
            Vec::new()
        }
    }

    /// Locks every unlocked message of `device_id` to `connection` and counts the attempt.
    fn take_c2d(&mut self, device_id: &str, connection: u64) -> Vec<C2dDelivery> {
        let Some(queue) = self.c2d.queues.get_mut(device_id) else {
            return Vec::new();
        };
        let mut deliveries = Vec::new();
        let mut dead = Vec::new();
        for queued in queue.iter_mut().filter(|q| q.locked_by.is_none()) {
            if queued.row.delivery_count >= MAX_DELIVERY_COUNT {
                dead.push(queued.row.id);
                continue;
            }
            queued.row.delivery_count += 1;
            queued.locked_by = Some(connection);
            if let Ok(message) = delivered_message(queued) {
                deliveries.push(C2dDelivery {
                    id: queued.row.id,
                    message,
                });
            }
        }
        let rows: Vec<C2dRow> = queue
            .iter()
            .filter(|q| deliveries.iter().any(|d| d.id == q.row.id))
            .map(|q| q.row.clone())
            .collect();
        let changes: Vec<Change<'_>> = rows.iter().map(Change::PutC2d).collect();
        if let Err(e) = self.store.apply(&changes) {
            tracing::error!(error = %e, "could not record C2D delivery attempts");
        }
        for id in dead {
            self.finish_c2d(device_id, id, "DeliveryCountExceeded");
        }
        deliveries
    }

    /// The device completed message `id` (MQTT PUBACK).
    pub(crate) fn complete_c2d(&mut self, device_id: &str, connection: u64, id: u64) {
        let locked = self
            .c2d
            .queues
            .get(device_id)
            .and_then(|q| q.iter().find(|m| m.row.id == id))
            .is_some_and(|m| m.locked_by == Some(connection));
        if locked {
            self.finish_c2d(device_id, id, "Success");
        }
    }

    /// A connection ended: its locked messages become deliverable again.
    pub(crate) fn release_c2d(&mut self, device_id: &str, connection: u64) {
        if self.c2d.subscribed.get(device_id) == Some(&connection) {
            self.c2d.subscribed.remove(device_id);
        }
        if let Some(queue) = self.c2d.queues.get_mut(device_id) {
            for queued in queue.iter_mut().filter(|q| q.locked_by == Some(connection)) {
                queued.locked_by = None;
            }
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
                    .filter(|m| m.expiry <= now)
                    .map(|m| (d.clone(), m.row.id))
            })
            .collect();
        for (device_id, id) in expired {
            self.finish_c2d(&device_id, id, "Expired");
        }
    }

    /// `DELETE /devices/{id}/commands`: removes every queued message (feedback `Purged`).
    pub(crate) fn purge_c2d(&mut self, device_id: &str) -> Result<u64, HubError> {
        self.record(device_id, None)?;
        let ids: Vec<u64> = self
            .c2d
            .queues
            .get(device_id)
            .map(|q| q.iter().map(|m| m.row.id).collect())
            .unwrap_or_default();
        for id in &ids {
            self.finish_c2d(device_id, *id, "Purged");
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
    fn finish_c2d(&mut self, device_id: &str, id: u64, status: &str) {
        let Some(queue) = self.c2d.queues.get_mut(device_id) else {
            return;
        };
        let Some(index) = queue.iter().position(|m| m.row.id == id) else {
            return;
        };
        let wants = match queue[index].ack {
            AckMode::Full => true,
            AckMode::Positive => status == "Success",
            AckMode::Negative => status != "Success",
            AckMode::None => false,
        };
        let generation = self
            .record(device_id, None)
            .map(|r| r.generation_id.clone())
            .unwrap_or_default();
        let Some(queue) = self.c2d.queues.get_mut(device_id) else {
            return;
        };
        let record = wants.then(|| {
            json!({
                "originalMessageId": queue[index].message_id,
                "enqueuedTimeUtc": format_timestamp(OffsetDateTime::now_utc()),
                "statusCode": status,
                "description": status,
                "deviceId": device_id,
                "deviceGenerationId": generation,
            })
        });
        let feedback_id = record.as_ref().map(|_| {
            self.c2d.next_id += 1;
            self.c2d.next_id
        });
        let text = record.as_ref().map(Value::to_string);
        let mut changes = vec![Change::DeleteC2d(id)];
        if let (Some(fid), Some(text)) = (feedback_id, text.as_deref()) {
            changes.push(Change::PutFeedback(fid, text));
        }
        if let Err(e) = self.store.apply(&changes) {
            tracing::error!(error = %e, "could not record the end of a C2D message");
            return;
        }
        if let Some(queue) = self.c2d.queues.get_mut(device_id) {
            queue.retain(|m| m.row.id != id);
        }
        if let (Some(fid), Some(record)) = (feedback_id, record) {
            self.c2d.feedback.push_back((fid, record));
        }
    }

    /// Messages waiting for `device_id` (the registry's `cloudToDeviceMessageCount`).
    pub(crate) fn c2d_count(&self, device_id: &str) -> u64 {
        self.c2d.depth(device_id) as u64
    }

    /// Takes up to [`FEEDBACK_BATCH`] feedback records under a new lock token; they stay
    /// stored until completed and return to the queue if abandoned.
    pub(crate) fn take_feedback(&mut self, lock_token: String) -> Option<Vec<Value>> {
        let now = std::time::Instant::now();
        let expired: Vec<String> = self
            .c2d
            .feedback_locked
            .iter()
            .filter(|(_, (until, _))| *until <= now)
            .map(|(token, _)| token.clone())
            .collect();
        for token in expired {
            let _ = self.abandon_feedback(&token);
        }
        if self.c2d.feedback.is_empty() {
            return None;
        }
        let n = self.c2d.feedback.len().min(FEEDBACK_BATCH);
        let batch: Vec<(u64, Value)> = self.c2d.feedback.drain(..n).collect();
        let records = batch.iter().map(|(_, v)| v.clone()).collect();
        self.c2d
            .feedback_locked
            .insert(lock_token, (now + FEEDBACK_LOCK, batch));
        Some(records)
    }

    /// Completes a feedback batch: its records are gone for good.
    pub(crate) fn complete_feedback(&mut self, lock_token: &str) -> Result<(), HubError> {
        let (_, batch) = self.c2d.feedback_locked.get(lock_token).ok_or_else(|| {
            HubError::new(
                ErrorCode::PreconditionFailed,
                "no feedback batch holds this lock token",
            )
        })?;
        let changes: Vec<Change<'_>> = batch
            .iter()
            .map(|(id, _)| Change::DeleteFeedback(*id))
            .collect();
        self.store.apply(&changes)?;
        self.c2d.feedback_locked.remove(lock_token);
        Ok(())
    }

    /// Abandons a feedback batch: its records are delivered again.
    pub(crate) fn abandon_feedback(&mut self, lock_token: &str) -> Result<(), HubError> {
        let (_, batch) = self.c2d.feedback_locked.remove(lock_token).ok_or_else(|| {
            HubError::new(
                ErrorCode::PreconditionFailed,
                "no feedback batch holds this lock token",
            )
        })?;
        for record in batch.into_iter().rev() {
            self.c2d.feedback.push_front(record);
        }
        Ok(())
    }
}

/// The message as delivered: with the hub's delivery properties.
fn delivered_message(queued: &Queued) -> Result<Message, HubError> {
    let message = PropertyBag::parse(&queued.row.properties)
        .to_message(Bytes::from(queued.row.body.clone()))
        .map_err(HubError::storage)?;
    let mut system = message.system_properties().clone();
    system.delivery_count = Some(queued.row.delivery_count);
    system.sequence_number = Some(queued.row.id);
    system.enqueued_time = parse_timestamp(&queued.row.enqueued_time);
    system.lock_token = Some(queued.row.id.to_string());
    let (body, properties, _) = message.into_parts();
    let mut builder = Message::builder(body).system_properties(system);
    for (k, v) in properties {
        builder = builder.property(k, v);
    }
    builder
        .build()
        .map_err(|e| HubError::invalid(e.to_string()))
}
