//! Epoch (owner level) receivers: who may read a consumer group's partition.
//!
//! Event Hubs' rules, kept here for every connection of the emulator:
//!
//! * a receiver with an epoch (link property `com.microsoft:epoch`) detaches every receiver
//!   of the same consumer group and partition with a lower epoch or none, with
//!   `amqp:link:stolen`;
//! * a receiver whose epoch is lower than the highest attached one, or without an epoch while
//!   an epoch receiver is attached, is refused with `amqp:link:stolen`;
//! * receivers with the same epoch, or all without one, read side by side — at most
//!   [`MAX_NON_EPOCH_READERS`] without an epoch per consumer group and partition (Event
//!   Hubs' quota of five), which also bounds the tasks a client can make the emulator run.
//!
//! A registration ends when its [`Registration`] is dropped (the link's task ends).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Receivers without an epoch one consumer group's partition may have (Event Hubs' quota).
pub(crate) const MAX_NON_EPOCH_READERS: usize = 5;

/// Receivers with an epoch one consumer group's partition may have attached at once (all
/// with the same epoch; a bound on what a client can make the emulator hold).
const MAX_EPOCH_READERS: usize = 64;

/// Why a receiver may not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EpochRefusal {
    /// A receiver with a higher epoch (or an epoch, against none) reads the partition.
    #[error(
        "a receiver with epoch {current} reads partition {partition} of consumer group `{group}`; this receiver's epoch is {asked}"
    )]
    Stolen {
        /// The consumer group.
        group: String,
        /// The partition.
        partition: u32,
        /// The highest epoch attached.
        current: i64,
        /// This receiver's epoch (`none`).
        asked: String,
    },
    /// Too many receivers read the partition.
    #[error(
        "partition {partition} of consumer group `{group}` already has {most} receivers, the most it may have"
    )]
    Quota {
        /// The consumer group.
        group: String,
        /// The partition.
        partition: u32,
        /// The quota.
        most: usize,
    },
}

/// One attached receiver.
struct Entry {
    id: u64,
    epoch: Option<i64>,
    /// Set to the new epoch when a higher-epoch receiver takes over.
    stolen: watch::Sender<Option<i64>>,
}

/// The attached receivers of every consumer group's partitions.
#[derive(Default)]
pub(crate) struct Epochs {
    readers: Mutex<HashMap<(String, u32), Vec<Entry>>>,
    next: AtomicU64,
}

/// A receiver's place among its partition's readers; it is removed when this is dropped.
pub(crate) struct Registration {
    epochs: Arc<Epochs>,
    key: (String, u32),
    id: u64,
    /// Changes to `Some(epoch)` when a receiver with that higher epoch takes over.
    pub(crate) stolen: watch::Receiver<Option<i64>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut readers = self
            .epochs
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entries) = readers.get_mut(&self.key) {
            entries.retain(|e| e.id != self.id);
            if entries.is_empty() {
                readers.remove(&self.key);
            }
        }
    }
}

impl Epochs {
    /// Registers a receiver of `group` (compared case-insensitively) and `partition` with
    /// `epoch`, detaching the receivers it takes over from; or says why it may not read.
    pub(crate) fn register(
        self: &Arc<Self>,
        group: &str,
        partition: u32,
        epoch: Option<i64>,
    ) -> Result<Registration, EpochRefusal> {
        let key = (group.to_ascii_lowercase(), partition);
        let mut readers = self
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entries = readers.entry(key.clone()).or_default();
        let highest = entries.iter().filter_map(|e| e.epoch).max();
        let asked = epoch.map_or_else(|| "none".to_owned(), |e| e.to_string());
        match (highest, epoch) {
            (Some(current), None) => {
                return Err(EpochRefusal::Stolen {
                    group: group.to_owned(),
                    partition,
                    current,
                    asked,
                });
            }
            (Some(current), Some(e)) if e < current => {
                return Err(EpochRefusal::Stolen {
                    group: group.to_owned(),
                    partition,
                    current,
                    asked,
                });
            }
            (_, Some(e)) => {
                // Every lower-epoch or epoch-less receiver goes.
                entries.retain(|entry| {
                    let keep = entry.epoch.is_some_and(|x| x >= e);
                    if !keep {
                        let _ = entry.stolen.send(Some(e));
                    }
                    keep
                });
            }
            (None, None) => {}
        }
        let (most, same_kind) = match epoch {
            None => (MAX_NON_EPOCH_READERS, entries.len()),
            Some(_) => (MAX_EPOCH_READERS, entries.len()),
        };
        if same_kind >= most {
            return Err(EpochRefusal::Quota {
                group: group.to_owned(),
                partition,
                most,
            });
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (stolen, watched) = watch::channel(None);
        entries.push(Entry { id, epoch, stolen });
        Ok(Registration {
            epochs: self.clone(),
            key,
            id,
            stolen: watched,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_higher_epoch_takes_over_and_a_lower_one_is_refused() {
        let epochs = Arc::new(Epochs::default());
        let plain = epochs.register("$Default", 0, None).unwrap();
        let first = epochs.register("$default", 0, Some(1)).unwrap();
        assert_eq!(
            *plain.stolen.borrow(),
            Some(1),
            "the epoch-less reader is detached"
        );
        assert!(matches!(
            epochs.register("$Default", 0, None),
            Err(EpochRefusal::Stolen { current: 1, .. })
        ));
        assert!(matches!(
            epochs.register("$Default", 0, Some(0)),
            Err(EpochRefusal::Stolen { current: 1, .. })
        ));
        let same = epochs.register("$Default", 0, Some(1)).unwrap();
        assert_eq!(
            *first.stolen.borrow(),
            None,
            "the same epoch reads side by side"
        );
        let second = epochs.register("$Default", 0, Some(2)).unwrap();
        assert_eq!(*first.stolen.borrow(), Some(2));
        assert_eq!(*same.stolen.borrow(), Some(2));
        // Other partitions and groups are not concerned.
        let other = epochs.register("$Default", 1, None).unwrap();
        let group = epochs.register("cg", 0, None).unwrap();
        assert_eq!(*other.stolen.borrow(), None);
        drop(second);
        drop(group);
        // With the epoch reader gone, epoch-less readers may read again.
        drop((first, same));
        assert!(epochs.register("$Default", 0, None).is_ok());
    }

    #[test]
    fn epoch_less_readers_are_bounded() {
        let epochs = Arc::new(Epochs::default());
        let held: Vec<_> = (0..MAX_NON_EPOCH_READERS)
            .map(|_| epochs.register("cg", 3, None).unwrap())
            .collect();
        assert!(matches!(
            epochs.register("cg", 3, None),
            Err(EpochRefusal::Quota {
                most: MAX_NON_EPOCH_READERS,
                ..
            })
        ));
        drop(held);
        assert!(epochs.register("cg", 3, None).is_ok());
        assert!(
            epochs
                .readers
                .lock()
                .unwrap()
                .get(&("cg".into(), 3))
                .is_none()
        );
    }
}
