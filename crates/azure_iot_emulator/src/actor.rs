//! A state owner on a thread of its own (ADR 4): front-ends send it closures and await the
//! results. The hub (`hub::Hub`) and the Device Provisioning Service (`dps`) are both one.
//!
//! The job queue is bounded ([`JOB_CAPACITY`]): `call` waits for room, so clients that flood
//! the owner are slowed at their own connection; `tell` (bookkeeping nobody waits for) drops and
//! counts what does not fit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::error::EmulatorError;

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// Jobs waiting for the state thread before callers wait for room (back-pressure): every
/// front-end awaits [`Actor::call`], so a flood of requests slows its senders instead of growing
/// memory.
pub(crate) const JOB_CAPACITY: usize = 4096;

/// A handle to a state thread owning an `S`. Cheap to clone; the thread ends when every handle
/// is dropped.
pub(crate) struct Actor<S> {
    jobs: mpsc::Sender<Job<S>>,
    /// Fire-and-forget jobs ([`Actor::tell`]) dropped because the queue was full.
    dropped: Arc<AtomicU64>,
}

impl<S> Clone for Actor<S> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
            dropped: self.dropped.clone(),
        }
    }
}

impl<S: Send + 'static> Actor<S> {
    /// Starts the thread `name`, which owns `state` from now on.
    pub(crate) fn spawn(name: &str, mut state: S) -> Result<(Self, JoinHandle<()>), EmulatorError> {
        let (jobs, mut queue) = mpsc::channel::<Job<S>>(JOB_CAPACITY);
        let owner = name.to_owned();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Some(job) = queue.blocking_recv() {
                    // A bug in one operation must not take the owner down with it: the caller
                    // of the failed job gets an error (its reply channel is dropped) and the
                    // thread carries on. Operations change copies and commit before they
                    // touch the live state, so a panic leaves that state consistent.
                    let outcome =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut state)));
                    if outcome.is_err() {
                        tracing::error!(
                            thread = %owner,
                            "a state operation panicked; the request failed, the state thread continues"
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
        F: FnOnce(&mut S) -> R + Send + 'static,
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
        F: FnOnce(&mut S) + Send + 'static,
    {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.jobs.try_send(Box::new(f)) {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "a state thread is saturated; bookkeeping updates were dropped"
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
