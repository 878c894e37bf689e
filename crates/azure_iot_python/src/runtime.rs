//! The one tokio runtime of the process and the two ways Python waits on it.
//!
//! * Blocking calls ([`wait`]) drive the operation on the calling thread (`block_on`) with the
//!   GIL released, waking every [`SIGNAL_CHECK`] to let Python run its signal handlers: Ctrl-C
//!   interrupts a blocking call (the operation is dropped) within that time.
//! * Awaitable calls ([`awaitable`]) hand the future to `pyo3-async-runtimes`, which completes
//!   an asyncio future on the caller's running loop: no thread per call.
//!
//! The runtime is `pyo3-async-runtimes`' (multi-threaded, started on first use), so both kinds
//! of call share one set of threads and one connection per client.

use std::future::Future;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::errors::ClientError;

/// How often a blocking wait lets Python check for signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// The process's runtime.
pub(crate) fn runtime() -> &'static Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// Runs `fut` to completion on the calling thread (`block_on`: the runtime's workers drive
/// the I/O, and the hub's answer wakes this thread directly, with no task spawned and joined
/// per call) with the GIL released; every [`SIGNAL_CHECK`] it lets Python run its signal
/// handlers, and a pending signal (KeyboardInterrupt) drops the operation and is raised. A
/// panic inside the operation is a `ClientError`, never an unwinding across the FFI boundary.
pub(crate) fn wait<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = PyResult<T>> + Send + 'static,
{
    let mut fut = Box::pin(fut);
    loop {
        let step = py.detach(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // The timer is made inside `block_on`: it needs the runtime's context.
                runtime().block_on(async { tokio::time::timeout(SIGNAL_CHECK, &mut fut).await })
            }))
        });
        match step {
            Ok(Ok(result)) => return result,
            Ok(Err(_still_running)) => py.check_signals()?,
            Err(_panic) => {
                return Err(ClientError::new_err(
                    "the operation failed: an internal error (panic) in the native client",
                ));
            }
        }
    }
}

/// `fut` as a Python awaitable on the caller's running asyncio loop.
pub(crate) fn awaitable<'py, T, F>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
    F: Future<Output = PyResult<T>> + Send + 'static,
{
    pyo3_async_runtimes::tokio::future_into_py(py, fut)
}
