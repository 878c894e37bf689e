//! The hub: its state, and the one thread that owns it.
//!
//! Front-ends never touch [`HubState`] directly. They send a closure to the state thread with
//! [`Hub::call`] and await its result; closures run one after another, so every operation sees
//! a consistent registry, and the SQLite connection is used from one thread only (blocking
//! there is fine: it is not a runtime worker).
//!
//! ```text
//!  HTTPS handler ─┐                        ┌──────────── state thread ────────────┐
//!  MQTT session  ─┼─ Hub::call(closure) ──▶│ HubState: registry, twins, policies, │
//!  AMQP link     ─┘   ◀── oneshot result ──│ links; Store (SQLite) write-through  │
//!                                          └──────────────────────────────────────┘
//! ```
//!
//! The job queue is bounded (`actor::JOB_CAPACITY`): `call` waits for room, so clients that
//! flood the hub are slowed at their own connection; `tell` (bookkeeping nobody waits for) drops
//! and counts what does not fit. The thread itself is a [`crate::actor::Actor`], which the DPS
//! shares.

pub(crate) mod c2d;
pub(crate) mod certificates;
pub(crate) mod configurations;
pub(crate) mod devices;
pub(crate) mod error;
pub(crate) mod exportimport;
pub(crate) mod faults;
pub(crate) mod files;
pub(crate) mod identity;
pub(crate) mod inbox;
pub(crate) mod jobs;
pub(crate) mod methods;
pub(crate) mod policy;
pub(crate) mod provision;
pub(crate) mod queue;
pub(crate) mod routed;
pub(crate) mod state;
pub(crate) mod twin;

pub(crate) use state::HubState;

use crate::actor::Actor;
#[cfg(test)]
use crate::actor::JOB_CAPACITY;
use crate::error::EmulatorError;

/// A handle to the hub's state thread. Cheap to clone; the thread ends when every handle is
/// dropped.
pub(crate) type Hub = Actor<HubState>;

impl Actor<HubState> {
    /// Starts the hub's state thread, which owns `state` from now on.
    pub(crate) fn start(
        state: HubState,
    ) -> Result<(Self, std::thread::JoinHandle<()>), EmulatorError> {
        Self::spawn("hub-state", state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn a_full_queue_makes_callers_wait_and_drops_bookkeeping() {
        let state = HubState::load(Store::open(None).unwrap()).unwrap();
        let (hub, _thread) = Hub::start(state).unwrap();
        // Block the state thread until released, then fill the queue behind it.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        hub.tell(move |_| {
            let _ = wait.recv();
        });
        tokio::task::yield_now().await;
        let mut told = 0;
        while hub.dropped() == 0 {
            hub.tell(|_| {});
            told += 1;
            assert!(told <= JOB_CAPACITY + 1, "the queue is bounded");
        }
        // A caller now waits for room instead of queueing without bound...
        let waiting = tokio::spawn({
            let hub = hub.clone();
            async move { hub.call(|_| 7).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // ...and is served once the thread catches up.
        release.send(()).unwrap();
        assert_eq!(waiting.await.unwrap().unwrap(), 7);
    }
}
