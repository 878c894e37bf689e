//! The native core of the `azure_iot_rs` Python package (python/ in the repository): the
//! device, provisioning and service clients of this workspace as a PyO3 extension module,
//! `azure_iot_rs._native`, built by maturin as one abi3 wheel per platform (CPython ≥ 3.9).
//!
//! # Design (docs/adr/0013-python-package.md)
//!
//! * **Split.** This crate holds what must be native: the connection, the runtime, the
//!   conversions and the error mapping. The Python API of `azure-iot-device` /
//!   `azure-iot-hub` 2.x (class names, keyword arguments, handler properties, models) is
//!   pure Python in python/azure_iot_rs, over the `Native*` classes here.
//! * **One runtime.** Every client runs on the one multi-threaded tokio runtime of
//!   `pyo3-async-runtimes` (module `runtime`). Blocking methods drive the operation on the
//!   calling thread (`block_on`, no task spawned per call) with the GIL released, waking every
//!   100 ms for Python's signal handlers, so Ctrl-C interrupts them; `*_async` methods return
//!   asyncio awaitables completed on the caller's loop.
//! * **Handlers never run on the runtime.** Inbound traffic goes from one Rust task per
//!   enabled feature into a bounded event queue (64); the Python package's handler thread (or,
//!   for aio clients, an asyncio task) takes events with `next_event` and calls the handlers
//!   there. A Rust task never takes the GIL to call Python, and a handler may call the client
//!   (the call is just another operation on the runtime). A slow handler fills the queue; the
//!   client then stops reading from the hub until it drains.
//! * **Provisioning** (module `provisioning`). `NativeProvisioningClient` keeps the checked
//!   settings of `azure_iot_provisioning_device`'s builder and builds a client per `register`
//!   (with the payload Python set); the result crosses as the operation id, the status and
//!   DPS's registration record as JSON, which the pure-Python models read. No handlers, no
//!   queue: a registration is one call.
//! * **Service managers** (modules `service`, `jobs`, `configurations`). One native class per
//!   `azure.iot.hub` manager over `azure_iot_service::ServiceClient`; requests cross as the
//!   hub's JSON, read into the Rust client's typed models before anything is sent (a model
//!   that does not fit is a `ValueError`), and answers return as JSON for the pure-Python
//!   models. Queries cross one page at a time (item type, continuation token, items).
//! * **SAS tokens the application supplies** (module `tokens`). A client created from a
//!   token (or a connection string holding one) reads it through a non-renewable
//!   `TokenProvider` over one shared slot, so every (re)connection uses the current token and
//!   the Rust client never reconnects just to renew it. One timer task per client (no polling)
//!   puts a `new_sastoken_required` event on the queue 120 s before the token expires, as
//!   azure-iot-device 2.x does; `update_sastoken` (checked in Python as 2.x checks it) swaps
//!   the slot, restarts the timer and reconnects (a disconnect, then a connect).
//! * **IoT Edge** (module `edge`). `create_from_edge_environment` fetches the trust bundle
//!   and signs a first token through the Edge workload API (a unix socket or http: one
//!   HTTP/1.1 request per connection, answers capped at 1 MiB) when the client is created,
//!   then signs every later token there (renewed like key-signed ones); the client dials
//!   `IOTEDGE_GATEWAYHOSTNAME` (`ClientOptions::gateway_host_name`).
//! * **Proxies.** `ProxyOptions` of type HTTP becomes the Rust client's `CONNECT` proxy
//!   (every transport and file upload); SOCKS4/SOCKS5 are refused by name in Python. The
//!   password goes to the Rust `Proxy`, whose `Debug` never shows it.
//! * **Batched asyncio completions** (module `completions`, unix). The `aio` clients' sends
//!   do not use one `pyo3-async-runtimes` awaitable each (a GIL acquisition on a runtime
//!   thread and a `call_soon_threadsafe` per completion): a finished send queues its outcome
//!   without the GIL and wakes the loop through a socket pair it watches, and the loop
//!   resolves every future finished meanwhile in one callback.
//! * **Errors.** Rust error kinds map onto the exception classes of
//!   `azure.iot.device.exceptions` (module `errors`); invalid input is a `ValueError` raised when
//!   the client is created (connection string, key, certificate, CA), not at `connect`.
//!   Messages never contain keys or tokens. PyO3 turns a panic into a Python exception, never
//!   an abort, and a panicking task surfaces as a `ClientError`.

#[cfg(unix)]
mod completions;
mod configurations;
mod device;
mod edge;
mod errors;
mod jobs;
mod message;
mod provisioning;
mod runtime;
mod service;
mod tokens;

use pyo3::prelude::*;

/// The extension module `azure_iot_rs._native`.
#[pymodule(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<device::NativeDeviceClient>()?;
    #[cfg(unix)]
    m.add_class::<completions::NativeCompletions>()?;
    m.add_class::<provisioning::NativeProvisioningClient>()?;
    m.add_class::<service::NativeRegistryManager>()?;
    m.add_class::<jobs::NativeJobManager>()?;
    m.add_class::<configurations::NativeConfigurationManager>()?;
    m.add("ClientError", py.get_type::<errors::ClientError>())?;
    m.add(
        "ConnectionFailedError",
        py.get_type::<errors::ConnectionFailedError>(),
    )?;
    m.add(
        "ConnectionDroppedError",
        py.get_type::<errors::ConnectionDroppedError>(),
    )?;
    m.add(
        "NoConnectionError",
        py.get_type::<errors::NoConnectionError>(),
    )?;
    m.add("CredentialError", py.get_type::<errors::CredentialError>())?;
    m.add(
        "OperationCancelled",
        py.get_type::<errors::OperationCancelled>(),
    )?;
    m.add(
        "OperationTimeout",
        py.get_type::<errors::OperationTimeout>(),
    )?;
    m.add("ServiceError", py.get_type::<errors::ServiceError>())?;
    m.add(
        "HttpOperationError",
        py.get_type::<errors::HttpOperationError>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
