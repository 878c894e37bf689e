//! One locked-queue type for everything the hub hands out and takes back: cloud-to-device
//! messages, delivery-feedback records and (later) file-upload notifications.
//!
//! A [`LockedQueue`] keeps entries in arrival order. Delivering an entry locks it to a
//! [`Lock`] and counts the attempt; the holder then settles it:
//!
//! | settle with | entry | what IoT Hub calls it |
//! |---|---|---|
//! | complete | removed, [`Outcome::Success`] | MQTT PUBACK, AMQP `accepted`, HTTPS `DELETE` |
//! | abandon | unlocked, delivered again (the count stays) | AMQP `released`/`modified`, HTTPS `POST …/abandon` |
//! | reject | removed, [`Outcome::Rejected`] (dead-lettered) | AMQP `rejected`, HTTPS `DELETE …?reject` |
//!
//! Two kinds of lock exist because the transports differ: a connection lock
//! ([`Lock::Connection`], MQTT) lasts while the connection does and is released when it ends;
//! a token lock ([`Lock::Token`], HTTPS ETags, AMQP delivery tags, feedback batches) is named
//! by an unguessable token and lasts until its deadline, after which the entry is deliverable
//! again and the token settles nothing ([`QueueError::LockLost`]).
//!
//! The queue holds no storage: callers (the C2D and feedback code in `c2d.rs`) write the
//! store first and apply the change here afterwards (ADR 4), so every method here is a pure
//! in-memory step that cannot fail half-way. Time comes in as a parameter, so lock expiry is
//! tested without waiting.

use std::collections::VecDeque;
use std::time::Instant;

/// A new unguessable lock token, GUID-shaped (HTTPS clients put it in a URL path and an
/// `If-Match` header; C# expects a GUID).
pub(crate) fn new_lock_token() -> String {
    // Version 4: 122 bits from the operating system's random source.
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// Who holds a delivered entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Lock {
    /// Held while device connection `.0` lasts (MQTT: the PUBACK completes).
    Connection(u64),
    /// Held by whoever presents this token, until the lock's deadline.
    Token(String),
}

/// How an entry left the queue (C2D feedback `statusCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The receiver completed it.
    Success,
    /// Its time to live ran out first.
    Expired,
    /// It was delivered the maximum number of times without being completed.
    DeliveryCountExceeded,
    /// The receiver rejected it (dead-lettered).
    Rejected,
    /// The queue was purged.
    Purged,
}

impl Outcome {
    /// The feedback record's `statusCode` (and `description`: the C SDK reads the status from
    /// the description, so the two are the same word).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::Expired => "Expired",
            Self::DeliveryCountExceeded => "DeliveryCountExceeded",
            Self::Rejected => "Rejected",
            Self::Purged => "Purged",
        }
    }

    /// Whether a sender asking for positive feedback hears of it.
    pub(crate) fn is_positive(self) -> bool {
        self == Self::Success
    }
}

/// What a holder does with a delivered entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Done with it.
    Complete,
    /// Give it back for another delivery.
    Abandon,
    /// Refuse it for good (dead-letter). AMQP and HTTPS front-ends reject; MQTT cannot.
    Reject,
}

/// Why a settle was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QueueError {
    /// No entry is locked under this lock (never was, already settled, or its lock expired and
    /// it was handed out again): IoT Hub's `DeviceMessageLockLost` / HTTP 412.
    LockLost,
}

/// An entry and its delivery bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct Entry<T> {
    /// Unique in the queue; stable across restarts (it is the store's row id).
    pub(crate) id: u64,
    /// Delivery attempts so far.
    pub(crate) delivery_count: u32,
    /// The payload.
    pub(crate) item: T,
    held: Option<Held>,
}

#[derive(Debug, Clone)]
struct Held {
    lock: Lock,
    until: Option<Instant>,
}

impl<T> Entry<T> {
    /// Whether the entry is delivered and not settled.
    pub(crate) fn is_locked(&self) -> bool {
        self.held.is_some()
    }
}

/// Entries in arrival order with per-entry locks.
#[derive(Debug)]
pub(crate) struct LockedQueue<T> {
    entries: VecDeque<Entry<T>>,
}

impl<T> Default for LockedQueue<T> {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
        }
    }
}

impl<T> LockedQueue<T> {
    /// Entries in the queue, locked or not.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every entry, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry<T>> {
        self.entries.iter()
    }

    /// The entry with this id.
    pub(crate) fn get(&self, id: u64) -> Option<&Entry<T>> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// Appends an unlocked entry (new, or loaded from the store with its count).
    pub(crate) fn push_back(&mut self, id: u64, item: T, delivery_count: u32) {
        self.entries.push_back(Entry {
            id,
            delivery_count,
            item,
            held: None,
        });
    }

    /// The ids of up to `max` deliverable (unlocked) entries, oldest first, after releasing
    /// token locks whose deadline passed at `now`. Nothing is locked yet: the caller records
    /// the attempts durably, then calls [`lock`](Self::lock).
    pub(crate) fn deliverable(&mut self, max: usize, now: Instant) -> Vec<u64> {
        self.expire_locks(now);
        self.entries
            .iter()
            .filter(|e| e.held.is_none())
            .take(max)
            .map(|e| e.id)
            .collect()
    }

    /// Locks the entries `ids` to `lock` (until `until`, for a token lock) and counts the
    /// attempt. Ids that are gone or already locked are skipped.
    pub(crate) fn lock(&mut self, ids: &[u64], lock: &Lock, until: Option<Instant>) {
        for entry in self
            .entries
            .iter_mut()
            .filter(|e| e.held.is_none() && ids.contains(&e.id))
        {
            entry.delivery_count += 1;
            entry.held = Some(Held {
                lock: lock.clone(),
                until,
            });
        }
    }

    /// The ids of the entries `lock` holds (all of them, or only `id`), in order. Expired token
    /// locks hold nothing.
    pub(crate) fn held_by(
        &self,
        lock: &Lock,
        id: Option<u64>,
        now: Instant,
    ) -> Result<Vec<u64>, QueueError> {
        let held: Vec<u64> = self
            .entries
            .iter()
            .filter(|e| id.is_none_or(|id| e.id == id))
            .filter(|e| {
                e.held
                    .as_ref()
                    .is_some_and(|h| &h.lock == lock && h.until.is_none_or(|u| now < u))
            })
            .map(|e| e.id)
            .collect();
        if held.is_empty() {
            return Err(QueueError::LockLost);
        }
        Ok(held)
    }

    /// Makes `id` deliverable again (abandon; or a lock that ended).
    pub(crate) fn unlock(&mut self, id: u64) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.id == id) {
            entry.held = None;
        }
    }

    /// Removes `id` from the queue.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Entry<T>> {
        let index = self.entries.iter().position(|e| e.id == id)?;
        self.entries.remove(index)
    }

    /// Unlocks every entry `lock` holds (a connection ended; a batch was abandoned). Entries
    /// keep their place, so an abandoned batch is the next one handed out.
    pub(crate) fn unlock_all(&mut self, lock: &Lock) -> Vec<u64> {
        let mut unlocked = Vec::new();
        for entry in self.entries.iter_mut() {
            if entry.held.as_ref().is_some_and(|h| &h.lock == lock) {
                entry.held = None;
                unlocked.push(entry.id);
            }
        }
        unlocked
    }

    /// Releases every token lock whose deadline is at or before `now`; returns their ids.
    pub(crate) fn expire_locks(&mut self, now: Instant) -> Vec<u64> {
        let mut released = Vec::new();
        for entry in self.entries.iter_mut() {
            if entry
                .held
                .as_ref()
                .is_some_and(|h| h.until.is_some_and(|u| u <= now))
            {
                entry.held = None;
                released.push(entry.id);
            }
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn queue(n: u64) -> LockedQueue<&'static str> {
        let mut q = LockedQueue::default();
        for id in 1..=n {
            q.push_back(id, "m", 0);
        }
        q
    }

    #[test]
    fn delivery_locks_and_counts() {
        let now = Instant::now();
        let mut q = queue(3);
        let ids = q.deliverable(2, now);
        assert_eq!(ids, vec![1, 2]);
        q.lock(&ids, &Lock::Connection(7), None);
        assert_eq!(q.deliverable(10, now), vec![3]);
        assert_eq!(q.get(1).map(|e| e.delivery_count), Some(1));
        assert_eq!(q.held_by(&Lock::Connection(7), None, now), Ok(vec![1, 2]));
        assert_eq!(
            q.held_by(&Lock::Connection(8), None, now),
            Err(QueueError::LockLost)
        );
    }

    #[test]
    fn connection_end_releases_and_redelivery_counts_again() {
        let now = Instant::now();
        let mut q = queue(1);
        q.lock(&[1], &Lock::Connection(1), None);
        assert_eq!(q.unlock_all(&Lock::Connection(1)), vec![1]);
        let ids = q.deliverable(1, now);
        q.lock(&ids, &Lock::Connection(2), None);
        assert_eq!(q.get(1).map(|e| e.delivery_count), Some(2));
    }

    #[test]
    fn token_locks_expire_and_then_settle_nothing() {
        let t0 = Instant::now();
        let mut q = queue(1);
        let token = Lock::Token("abc".into());
        q.lock(&[1], &token, Some(t0 + Duration::from_secs(60)));
        assert_eq!(q.held_by(&token, Some(1), t0), Ok(vec![1]));
        let later = t0 + Duration::from_secs(60);
        assert_eq!(q.held_by(&token, Some(1), later), Err(QueueError::LockLost));
        assert_eq!(q.deliverable(1, later), vec![1]);
        assert!(!q.get(1).is_some_and(Entry::is_locked));
    }

    #[test]
    fn a_wrong_id_under_a_valid_token_is_lock_lost() {
        let t0 = Instant::now();
        let mut q = queue(2);
        let token = Lock::Token("abc".into());
        q.lock(&[1], &token, Some(t0 + Duration::from_secs(1)));
        assert_eq!(q.held_by(&token, Some(2), t0), Err(QueueError::LockLost));
    }

    #[test]
    fn lock_tokens_are_guids_and_differ() {
        let (a, b) = (new_lock_token(), new_lock_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn removal_and_unlock() {
        let now = Instant::now();
        let mut q = queue(2);
        q.lock(&[1, 2], &Lock::Connection(1), None);
        assert!(q.remove(1).is_some());
        q.unlock(2);
        assert_eq!(q.deliverable(5, now), vec![2]);
        assert_eq!(q.len(), 1);
    }
}
