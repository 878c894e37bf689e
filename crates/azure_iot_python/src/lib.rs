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
//!   `pyo3-async-runtimes` (module `runtime`). Blocking methods spawn the operation and wait with
//!   the GIL released, waking every 100 ms for Python's signal handlers, so Ctrl-C interrupts
//!   them; `*_async` methods return asyncio awaitables completed on the caller's loop.
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
//! * **Errors.** Rust error kinds map onto the exception classes of
//!   `azure.iot.device.exceptions` (module `errors`); invalid input is a `ValueError` raised when
//!   the client is created (connection string, key, certificate, CA), not at `connect`.
//!   Messages never contain keys or tokens. PyO3 turns a panic into a Python exception, never
//!   an abort, and a panicking task surfaces as a `ClientError`.

mod configurations;
mod device;
mod errors;
mod jobs;
mod message;
mod provisioning;
mod runtime;
mod service;

use pyo3::prelude::*;

/// The extension module `azure_iot_rs._native`.
#[pymodule(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<device::NativeDeviceClient>()?;
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
