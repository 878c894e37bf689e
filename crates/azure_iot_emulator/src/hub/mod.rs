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
//! The job queue is bounded ([`JOB_CAPACITY`]): `call` waits for room, so clients that flood
//! the hub are slowed at their own connection; `tell` (bookkeeping nobody waits for) drops and
//! counts what does not fit.

pub(crate) mod c2d;
pub(crate) mod certificates;
pub(crate) mod devices;
pub(crate) mod error;
pub(crate) mod faults;
pub(crate) mod files;
pub(crate) mod identity;
pub(crate) mod inbox;
pub(crate) mod methods;
pub(crate) mod policy;
pub(crate) mod queue;
pub(crate) mod state;
pub(crate) mod twin;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

pub(crate) use state::HubState;

use crate::error::EmulatorError;

type Job = Box<dyn FnOnce(&mut HubState) + Send>;

/// Jobs waiting for the state thread before callers wait for room (back-pressure): every
/// front-end awaits [`Hub::call`], so a flood of requests slows its senders instead of growing
/// memory.
pub(crate) const JOB_CAPACITY: usize = 4096;

/// A handle to the state thread. Cheap to clone; the thread ends when every handle is dropped.
#[derive(Clone)]
pub(crate) struct Hub {
    jobs: mpsc::Sender<Job>,
    /// Fire-and-forget jobs ([`Hub::tell`]) dropped because the queue was full.
    dropped: Arc<AtomicU64>,
}

impl Hub {
    /// Starts the state thread, which owns `state` from now on.
    pub(crate) fn start(mut state: HubState) -> Result<(Self, JoinHandle<()>), EmulatorError> {
        let (jobs, mut queue) = mpsc::channel::<Job>(JOB_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("hub-state".into())
            .spawn(move || {
                while let Some(job) = queue.blocking_recv() {
                    // A bug in one operation must not take the hub down with it: the caller
                    // of the failed job gets an error (its reply channel is dropped) and the
                    // thread carries on. Operations change copies and commit before they
                    // touch the live state, so a panic leaves that state consistent.
                    let outcome =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut state)));
                    if outcome.is_err() {
                        tracing::error!(
                            "a hub operation panicked; the request failed, the hub continues"
                        );
                    }
                }
            })?;
        Ok((
            Self {
                jobs,
                dropped: Arc::default(),
            },
            thread,
        ))
    }

    /// Runs `f` on the state thread and returns its result. Waits for room in the job queue
    /// when it is full.
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R, EmulatorError>
    where
        R: Send + 'static,
        F: FnOnce(&mut HubState) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move |state| {
                let _ = tx.send(f(state));
            }))
            .await
            .map_err(|_| EmulatorError::ShuttingDown)?;
        rx.await.map_err(|_| EmulatorError::ShuttingDown)
    }

    /// Runs `f` on the state thread without waiting for it (bookkeeping that no answer
    /// depends on); dropped, and counted, if the queue is full, and dropped if the emulator is
    /// shutting down.
    pub(crate) fn tell<F>(&self, f: F)
    where
        F: FnOnce(&mut HubState) + Send + 'static,
    {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.jobs.try_send(Box::new(f)) {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "the hub state thread is saturated; bookkeeping updates were dropped"
                );
            }
        }
    }

    /// Fire-and-forget jobs dropped so far because the queue was full.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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
