"""The exception classes of ``azure.iot.device.exceptions`` (same names and hierarchy), raised
by this package's device clients, plus ``HttpOperationError`` for the registry manager.

The classes are defined by the native module, which raises them; this module is where
applications import them from."""

from ._native import (
    ClientError,
    ConnectionDroppedError,
    ConnectionFailedError,
    CredentialError,
    HttpOperationError,
    NoConnectionError,
    OperationCancelled,
    OperationTimeout,
    ServiceError,
)


def _status_code(self: HttpOperationError):  # type: ignore[no-untyped-def]
    return self.args[1] if len(self.args) > 1 else None


def _error_code(self: HttpOperationError):  # type: ignore[no-untyped-def]
    return self.args[2] if len(self.args) > 2 else None


# The HTTP status and the hub's error code of a failed registry operation, as attributes.
HttpOperationError.status_code = property(_status_code)  # type: ignore[assignment]
HttpOperationError.error_code = property(_error_code)  # type: ignore[assignment]

__all__ = [
    "ClientError",
    "ConnectionDroppedError",
    "ConnectionFailedError",
    "CredentialError",
    "HttpOperationError",
    "NoConnectionError",
    "OperationCancelled",
    "OperationTimeout",
    "ServiceError",
]
