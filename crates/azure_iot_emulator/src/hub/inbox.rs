//! Service-bound inboxes: records the hub keeps for the service to read, durable until a
//! reader completes them — delivery feedback (`/messages/serviceBound/feedback`) and
//! file-upload notifications (`/messages/serviceBound/filenotifications`).
//!
//! Both are one [`Inbox`]: a [`LockedQueue`] of JSON records under token locks, written to
//! the store before memory (ADR 4). A reader takes up to a batch under a new token for the
//! inbox's lock duration, then completes (records gone) or abandons (delivered again) it; a
//! lock that runs out returns the records too. A record handed out its maximum number of
//! times without being completed is dropped (dead-lettered) at the next take. Delivery counts
//! live in memory: a restart gives waiting records a fresh count.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::HubState;
use super::error::{ErrorCode, HubError};
use super::queue::{Lock, LockedQueue, QueueError};
use crate::error::EmulatorError;
use crate::store::{Change, Store};

/// Which inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum InboxKind {
    /// C2D delivery feedback: batches of up to 64 records.
    Feedback,
    /// File-upload notifications: one per delivery.
    FileNotifications,
}

impl InboxKind {
    /// The store table holding the inbox's records.
    pub(crate) fn table(self) -> &'static str {
        match self {
            Self::Feedback => "feedback",
            Self::FileNotifications => "file_notifications",
        }
    }

    /// The AMQP content type of a delivery (the C# service SDK checks it).
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::Feedback => "application/vnd.microsoft.iothub.feedback.json",
            Self::FileNotifications => "application/vnd.microsoft.iothub.filenotification.json",
        }
    }

    /// The body of one delivery: feedback is a JSON array, a file notification one object.
    pub(crate) fn body(self, mut records: Vec<Value>) -> Value {
        match self {
            Self::Feedback => Value::Array(records),
            Self::FileNotifications if records.len() == 1 => records.remove(0),
            Self::FileNotifications => Value::Array(records),
        }
    }
}

/// Records an inbox keeps at most: past this the oldest is dropped for each new one, so a
/// device looping uploads (or a sender asking feedback for every message) with no service
/// reading cannot grow the hub without bound. IoT Hub bounds them in time instead (file
/// notifications and feedback expire after an hour by default).
pub(crate) const MAX_INBOX_RECORDS: usize = 100_000;

/// How an inbox hands records out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InboxSettings {
    /// How long a taken batch stays locked to its reader.
    pub(crate) lock: Duration,
    /// Most records in one take.
    pub(crate) batch: usize,
    /// Deliveries before a record is dropped.
    pub(crate) max_deliveries: u32,
}

/// A batch handed to a reader.
#[derive(Debug, Clone)]
pub(crate) struct Taken {
    /// The records, oldest first.
    pub(crate) records: Vec<Value>,
    /// How long the batch stays locked to the token it was taken under.
    pub(crate) lock: Duration,
}

/// One inbox: its records and settings.
#[derive(Debug)]
pub(crate) struct Inbox {
    settings: InboxSettings,
    queue: LockedQueue<Value>,
    next_id: u64,
}

impl Inbox {
    /// Loads the inbox's records from `store`.
    pub(crate) fn load(
        store: &Store,
        kind: InboxKind,
        settings: InboxSettings,
    ) -> Result<Self, EmulatorError> {
        let mut inbox = Self {
            settings,
            queue: LockedQueue::default(),
            next_id: 0,
        };
        for (id, record) in store.inbox_rows(kind)? {
            let value = serde_json::from_str(&record).map_err(|e| {
                EmulatorError::Storage(format!("{} record {id} is corrupt: {e}", kind.table()))
            })?;
            inbox.next_id = inbox.next_id.max(id);
            inbox.queue.push_back(id, value, 0);
        }
        Ok(inbox)
    }

    /// Changes how records are handed out from now on.
    pub(crate) fn set_settings(&mut self, settings: InboxSettings) {
        self.settings = settings;
    }

    /// Reserves the id of the next record; the caller stores it with [`Change::PutInbox`]
    /// and then calls [`added`](Self::added).
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id + 1
    }

    /// Adds a record the caller has stored under `id`.
    pub(crate) fn added(&mut self, id: u64, record: Value) {
        self.next_id = self.next_id.max(id);
        self.queue.push_back(id, record, 0);
    }

    /// Records waiting or locked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

impl HubState {
    fn inbox(&mut self, kind: InboxKind) -> &mut Inbox {
        match kind {
            InboxKind::Feedback => &mut self.c2d.feedback,
            InboxKind::FileNotifications => &mut self.files.notifications,
        }
    }

    /// Stores `record` and adds it to the inbox; at [`MAX_INBOX_RECORDS`] the oldest record
    /// goes first.
    pub(crate) fn push_inbox(&mut self, kind: InboxKind, record: Value) -> Result<(), HubError> {
        self.push_inbox_within(kind, record, MAX_INBOX_RECORDS)
    }

    fn push_inbox_within(
        &mut self,
        kind: InboxKind,
        record: Value,
        most: usize,
    ) -> Result<(), HubError> {
        let inbox = self.inbox(kind);
        let id = inbox.next_id();
        let oldest = (inbox.queue.len() >= most)
            .then(|| inbox.queue.iter().next().map(|e| e.id))
            .flatten();
        let text = record.to_string();
        let mut changes = vec![Change::PutInbox(kind, id, &text)];
        if let Some(old) = oldest {
            changes.push(Change::DeleteInbox(kind, old));
        }
        self.store.apply(&changes)?;
        let inbox = self.inbox(kind);
        if let Some(old) = oldest {
            inbox.queue.remove(old);
            tracing::warn!(
                inbox = kind.table(),
                "the inbox is full ({most} records nobody read): its oldest record was dropped"
            );
        }
        inbox.added(id, record);
        Ok(())
    }

    /// Takes up to a batch of records under the token lock `lock_token`; `None` when nothing
    /// is deliverable. Records that used up their deliveries are dropped first.
    pub(crate) fn take_inbox(&mut self, kind: InboxKind, lock_token: String) -> Option<Taken> {
        let now = Instant::now();
        let settings = self.inbox(kind).settings;
        let inbox = self.inbox(kind);
        let (exhausted, ids): (Vec<u64>, Vec<u64>) = inbox
            .queue
            .deliverable(usize::MAX, now)
            .into_iter()
            .partition(|id| {
                inbox
                    .queue
                    .get(*id)
                    .is_some_and(|e| e.delivery_count >= settings.max_deliveries)
            });
        if !exhausted.is_empty() {
            let changes: Vec<Change<'_>> = exhausted
                .iter()
                .map(|id| Change::DeleteInbox(kind, *id))
                .collect();
            match self.store.apply(&changes) {
                Ok(()) => {
                    tracing::info!(
                        inbox = kind.table(),
                        dropped = exhausted.len(),
                        "records delivered their maximum number of times were dropped"
                    );
                    let inbox = self.inbox(kind);
                    for id in exhausted {
                        inbox.queue.remove(id);
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not drop exhausted inbox records"),
            }
        }
        let ids: Vec<u64> = ids.into_iter().take(settings.batch).collect();
        let inbox = self.inbox(kind);
        if ids.is_empty() {
            return None;
        }
        inbox
            .queue
            .lock(&ids, &Lock::Token(lock_token), Some(now + settings.lock));
        let records = ids
            .iter()
            .filter_map(|id| inbox.queue.get(*id).map(|e| e.item.clone()))
            .collect();
        Some(Taken {
            records,
            lock: settings.lock,
        })
    }

    /// Completes the batch `lock_token` holds: its records are gone for good.
    pub(crate) fn complete_inbox(
        &mut self,
        kind: InboxKind,
        lock_token: &str,
    ) -> Result<(), HubError> {
        let ids = self.inbox_held(kind, lock_token)?;
        let changes: Vec<Change<'_>> = ids
            .iter()
            .map(|id| Change::DeleteInbox(kind, *id))
            .collect();
        self.store.apply(&changes)?;
        let inbox = self.inbox(kind);
        for id in ids {
            inbox.queue.remove(id);
        }
        Ok(())
    }

    /// Abandons the batch `lock_token` holds: its records are delivered again.
    pub(crate) fn abandon_inbox(
        &mut self,
        kind: InboxKind,
        lock_token: &str,
    ) -> Result<(), HubError> {
        self.inbox_held(kind, lock_token)?;
        self.inbox(kind)
            .queue
            .unlock_all(&Lock::Token(lock_token.to_owned()));
        Ok(())
    }

    fn inbox_held(&mut self, kind: InboxKind, lock_token: &str) -> Result<Vec<u64>, HubError> {
        self.inbox(kind)
            .queue
            .held_by(&Lock::Token(lock_token.to_owned()), None, Instant::now())
            .map_err(|QueueError::LockLost| {
                HubError::new(
                    ErrorCode::PreconditionFailed,
                    "no batch holds this lock token (completed already, or its lock expired)",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn state() -> HubState {
        HubState::load(Store::open(None).unwrap()).unwrap()
    }

    #[test]
    fn a_full_inbox_drops_its_oldest_record_for_a_new_one() {
        let mut s = state();
        let kind = InboxKind::FileNotifications;
        for n in 0..5 {
            s.push_inbox_within(kind, json!({"n": n}), 3).unwrap();
        }
        assert_eq!(s.files.notifications.len(), 3);
        let mut seen = Vec::new();
        while let Some(taken) = s.take_inbox(kind, format!("t{}", seen.len())) {
            seen.extend(taken.records);
        }
        assert_eq!(
            seen,
            vec![json!({"n": 2}), json!({"n": 3}), json!({"n": 4})]
        );
    }

    #[test]
    fn file_notifications_come_one_at_a_time_and_settle_by_token() {
        let mut s = state();
        let kind = InboxKind::FileNotifications;
        s.push_inbox(kind, json!({"blobName": "d/a"})).unwrap();
        s.push_inbox(kind, json!({"blobName": "d/b"})).unwrap();
        let a = s.take_inbox(kind, "a".into()).unwrap();
        assert_eq!(a.records, vec![json!({"blobName": "d/a"})]);
        let b = s.take_inbox(kind, "b".into()).unwrap();
        assert_eq!(b.records, vec![json!({"blobName": "d/b"})]);
        assert!(s.take_inbox(kind, "c".into()).is_none());
        s.abandon_inbox(kind, "a").unwrap();
        assert!(s.complete_inbox(kind, "a").is_err(), "abandoned");
        s.complete_inbox(kind, "b").unwrap();
        let again = s.take_inbox(kind, "d".into()).unwrap();
        assert_eq!(again.records, vec![json!({"blobName": "d/a"})]);
        s.complete_inbox(kind, "d").unwrap();
        assert!(s.take_inbox(kind, "e".into()).is_none());
    }

    #[test]
    fn records_are_dropped_after_their_maximum_deliveries() {
        let mut s = state();
        let kind = InboxKind::FileNotifications;
        s.files.notifications.set_settings(InboxSettings {
            lock: Duration::from_secs(60),
            batch: 1,
            max_deliveries: 2,
        });
        s.push_inbox(kind, json!(1)).unwrap();
        for token in ["a", "b"] {
            assert!(s.take_inbox(kind, token.into()).is_some());
            s.abandon_inbox(kind, token).unwrap();
        }
        assert!(s.take_inbox(kind, "c".into()).is_none());
        assert_eq!(s.files.notifications.len(), 0);
    }

    #[test]
    fn records_survive_a_restart_until_completed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = HubState::load(Store::open(Some(dir.path())).unwrap()).unwrap();
            s.push_inbox(InboxKind::FileNotifications, json!("kept"))
                .unwrap();
            s.push_inbox(InboxKind::FileNotifications, json!("done"))
                .unwrap();
            s.take_inbox(InboxKind::FileNotifications, "t".into())
                .unwrap();
            let second = s
                .take_inbox(InboxKind::FileNotifications, "u".into())
                .unwrap();
            assert_eq!(second.records, vec![json!("done")]);
            s.complete_inbox(InboxKind::FileNotifications, "u").unwrap();
        }
        let mut s = HubState::load(Store::open(Some(dir.path())).unwrap()).unwrap();
        let taken = s
            .take_inbox(InboxKind::FileNotifications, "v".into())
            .unwrap();
        assert_eq!(taken.records, vec![json!("kept")]);
        assert!(
            s.take_inbox(InboxKind::FileNotifications, "w".into())
                .is_none()
        );
    }
}
