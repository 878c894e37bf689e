//! Batched completion of asyncio sends (`NativeCompletions`), the hot path of the `aio`
//! clients' `send_message`.
//!
//! `pyo3-async-runtimes` completes each awaitable by taking the GIL on a runtime thread and
//! calling `loop.call_soon_threadsafe`: with 100 sends in flight that is 100 GIL handoffs
//! between the runtime's threads and the busy loop thread per round of acknowledgements, each
//! of which waits for the loop thread to let go of the GIL. Here a finished send never touches
//! Python: its outcome goes into a queue and, if the queue was empty, one byte into a socket
//! pair. The loop watches the other end (`loop.add_reader`) and, on its own thread with the
//! GIL it already holds, takes every outcome queued meanwhile (`drain`) and resolves the
//! futures. No GIL on the runtime, one wake-up per batch.
//!
//! The queue holds one entry per send in flight, and sends in flight are bounded by the
//! client's pending-operation permits, so it cannot grow without bound.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::PyBaseException;
use pyo3::prelude::*;

use crate::errors::ClientError;

/// What the runtime side and the loop side share.
pub(crate) struct Shared {
    /// Finished operations: (id, the error if it failed).
    done: Mutex<Vec<(u64, Option<PyErr>)>>,
    /// Written (one byte) when `done` turns non-empty.
    wake: UnixStream,
    /// Watched by the loop.
    watched: UnixStream,
}

impl Shared {
    fn done(&self) -> MutexGuard<'_, Vec<(u64, Option<PyErr>)>> {
        // A poisoned lock only means a panic elsewhere; the queue itself is whole.
        self.done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues the outcome of operation `id` and wakes the loop if it was not already woken.
    /// Never takes the GIL.
    fn complete(&self, id: u64, result: PyResult<()>) {
        let first = {
            let mut done = self.done();
            done.push((id, result.err()));
            done.len() == 1
        };
        if first {
            // A full socket buffer means wake-ups are already pending: nothing is lost.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// The promise to report operation `op`: [`finish`](Self::finish) reports its outcome; dropped
/// unfinished (the task panicked, or the runtime dropped it), it reports a `ClientError`, so
/// no awaiting future is left pending for ever.
pub(crate) struct Completion {
    queue: Arc<Shared>,
    op: u64,
    finished: bool,
}

impl Completion {
    /// The promise to report `op` to `queue`.
    pub(crate) fn new(queue: Arc<Shared>, op: u64) -> Self {
        Self {
            queue,
            op,
            finished: false,
        }
    }

    /// Reports the outcome.
    pub(crate) fn finish(mut self, result: PyResult<()>) {
        self.finished = true;
        self.queue.complete(self.op, result);
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.finished {
            self.queue.complete(
                self.op,
                Err(ClientError::new_err(
                    "the operation ended without an outcome (its task was dropped)",
                )),
            );
        }
    }
}

/// The completion queue of one asyncio loop (`azure_iot_rs.aio` makes one per loop).
#[pyclass(module = "azure_iot_rs._native", frozen)]
pub(crate) struct NativeCompletions {
    pub(crate) shared: Arc<Shared>,
}

#[pymethods]
impl NativeCompletions {
    /// A queue and its wake-up socket pair.
    #[new]
    fn new() -> PyResult<Self> {
        let (wake, watched) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        watched.set_nonblocking(true)?;
        Ok(Self {
            shared: Arc::new(Shared {
                done: Mutex::new(Vec::new()),
                wake,
                watched,
            }),
        })
    }

    /// The descriptor the loop watches for readability (`loop.add_reader`).
    fn fileno(&self) -> i32 {
        self.shared.watched.as_raw_fd()
    }

    /// Everything finished since the last call: (id, None) for a success, (id, exception)
    /// for a failure. Clears the wake-up bytes first, so a completion queued after that wakes
    /// the loop again.
    fn drain(&self, py: Python<'_>) -> Vec<(u64, Option<Py<PyBaseException>>)> {
        let mut sink = [0u8; 256];
        loop {
            match (&self.shared.watched).read(&mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: nothing more to read
            }
        }
        let done = std::mem::take(&mut *self.shared.done());
        done.into_iter()
            .map(|(id, error)| (id, error.map(|e| e.into_value(py))))
            .collect()
    }
}
