//! The exception classes of `azure_iot_rs.exceptions`, and how each Rust error kind maps onto
//! them.
//!
//! The device classes mirror `azure.iot.device.exceptions` (same names, same hierarchy), so
//! `except ConnectionFailedError:` written for the official SDK keeps working. Messages are the
//! Rust errors' own, which never contain a key or token.

use azure_iot_device::ErrorKind as DeviceKind;
use azure_iot_provisioning_device::Error as ProvisioningError;
use azure_iot_service::ErrorKind as ServiceKind;
use pyo3::PyErr;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};

create_exception!(
    azure_iot_rs.exceptions,
    ClientError,
    PyException,
    "An error in the client (base of the connection and credential errors)."
);
create_exception!(
    azure_iot_rs.exceptions,
    ConnectionFailedError,
    ClientError,
    "The connection to the hub could not be established."
);
create_exception!(
    azure_iot_rs.exceptions,
    ConnectionDroppedError,
    ClientError,
    "The connection to the hub was lost before the operation finished."
);
create_exception!(
    azure_iot_rs.exceptions,
    NoConnectionError,
    ClientError,
    "The operation needs a connection and there is none."
);
create_exception!(
    azure_iot_rs.exceptions,
    CredentialError,
    ClientError,
    "The hub refused the credentials (wrong key, expired token, unknown certificate)."
);
create_exception!(
    azure_iot_rs.exceptions,
    OperationCancelled,
    PyException,
    "The operation was cancelled (the client was disconnected or shut down)."
);
create_exception!(
    azure_iot_rs.exceptions,
    OperationTimeout,
    PyException,
    "The operation did not finish in time."
);
create_exception!(
    azure_iot_rs.exceptions,
    ServiceError,
    PyException,
    "The hub answered the operation with an error status."
);
create_exception!(
    azure_iot_rs.exceptions,
    HttpOperationError,
    PyException,
    "A registry (service) operation failed; args are (message, status_code, error_code)."
);

/// The exception a device client error is raised as.
pub(crate) fn device_error(e: azure_iot_device::Error) -> PyErr {
    let message = e.to_string();
    match e.kind() {
        DeviceKind::InvalidArgument => PyValueError::new_err(message),
        DeviceKind::Connect | DeviceKind::Refused => ConnectionFailedError::new_err(message),
        DeviceKind::Unauthorized => CredentialError::new_err(message),
        DeviceKind::Timeout => OperationTimeout::new_err(message),
        DeviceKind::Disconnected => ConnectionDroppedError::new_err(message),
        DeviceKind::Closed => OperationCancelled::new_err(message),
        DeviceKind::Status(status) => ServiceError::new_err(format!("{message} (status {status})")),
        _ => ClientError::new_err(message),
    }
}

/// The exception a service client error is raised as: invalid arguments are `ValueError`s
/// (nothing was sent), everything else an [`HttpOperationError`] carrying the HTTP status and
/// the hub's error code when there is one.
pub(crate) fn service_error(e: azure_iot_service::Error) -> PyErr {
    let message = e.to_string();
    match e.kind() {
        ServiceKind::InvalidArgument => PyValueError::new_err(message),
        _ => HttpOperationError::new_err((message, e.status(), e.error_code().map(str::to_owned))),
    }
}

/// The exception a provisioning error is raised as, as the official `register` raises them:
/// refused credentials a [`CredentialError`], no answer in time an [`OperationTimeout`], an
/// unreachable service a [`ConnectionFailedError`]. A registration DPS refused or ended
/// (disabled, failed, not found, another status) is a [`ServiceError`]; the Python client
/// raises it as the cause of a `ClientError`, as the official client does.
pub(crate) fn provisioning_error(e: ProvisioningError) -> PyErr {
    let message = e.to_string();
    match e {
        ProvisioningError::InvalidArgument(_) => PyValueError::new_err(message),
        ProvisioningError::Unauthorized { .. } => CredentialError::new_err(message),
        ProvisioningError::Timeout(_) => OperationTimeout::new_err(message),
        ProvisioningError::Transport { .. } => ConnectionFailedError::new_err(message),
        ProvisioningError::DeviceClient(e) => device_error(e),
        ProvisioningError::Disabled { .. }
        | ProvisioningError::Failed { .. }
        | ProvisioningError::NotFound { .. }
        | ProvisioningError::Service { .. } => ServiceError::new_err(message),
        _ => ClientError::new_err(message),
    }
}
