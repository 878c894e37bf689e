//! The one tokio runtime of the process and the two ways Python waits on it.
//!
//! * Blocking calls ([`wait`]) spawn the operation on the runtime and wait for it with the GIL
//!   released, waking every [`SIGNAL_CHECK`] to let Python run its signal handlers: Ctrl-C
//!   interrupts a blocking call (the operation is aborted) within that time.
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

/// Runs `fut` on the runtime and waits for it with the GIL released; a pending signal
/// (KeyboardInterrupt) aborts the operation and is raised.
pub(crate) fn wait<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = PyResult<T>> + Send + 'static,
{
    let mut task = runtime().spawn(fut);
    loop {
        let step = py.detach(|| {
            runtime().block_on(async { tokio::time::timeout(SIGNAL_CHECK, &mut task).await })
        });
        match step {
            Ok(Ok(result)) => return result,
            Ok(Err(join)) => {
                return Err(ClientError::new_err(format!(
                    "the operation's task failed: {join}"
                )));
            }
            Err(_still_running) => {
                if let Err(signal) = py.check_signals() {
                    task.abort();
                    return Err(signal);
                }
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
