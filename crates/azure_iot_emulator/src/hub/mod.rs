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

pub(crate) mod c2d;
pub(crate) mod certificates;
pub(crate) mod devices;
pub(crate) mod error;
pub(crate) mod faults;
pub(crate) mod identity;
pub(crate) mod methods;
pub(crate) mod policy;
pub(crate) mod queue;
pub(crate) mod state;
pub(crate) mod twin;

use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

pub(crate) use state::HubState;

use crate::error::EmulatorError;

type Job = Box<dyn FnOnce(&mut HubState) + Send>;

/// A handle to the state thread. Cheap to clone; the thread ends when every handle is dropped.
#[derive(Clone)]
pub(crate) struct Hub {
    jobs: mpsc::Sender<Job>,
}

impl Hub {
    /// Starts the state thread, which owns `state` from now on.
    pub(crate) fn start(mut state: HubState) -> Result<(Self, JoinHandle<()>), EmulatorError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("hub-state".into())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
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
        Ok((Self { jobs }, thread))
    }

    /// Runs `f` on the state thread and returns its result.
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
            .map_err(|_| EmulatorError::ShuttingDown)?;
        rx.await.map_err(|_| EmulatorError::ShuttingDown)
    }

    /// Runs `f` on the state thread without waiting for it (bookkeeping that no answer
    /// depends on); dropped if the emulator is shutting down.
    pub(crate) fn tell<F>(&self, f: F)
    where
        F: FnOnce(&mut HubState) + Send + 'static,
    {
        let _ = self.jobs.send(Box::new(f));
    }
}
