"""The exception classes of ``azure.iot.device.exceptions`` (same names and hierarchy), raised
by this package's device clients, plus ``HttpOperationError`` for the registry manager.

The classes are defined by the native module, which raises them; this module is where
applications import them from."""

from typing import Optional

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


class _Response:
    """What msrest's ``HttpOperationError.response`` offers that this package can: the HTTP
    ``status_code`` (None when no answer came)."""

    def __init__(self, status_code: Optional[int]) -> None:
        self.status_code = status_code

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"


def _response(self: HttpOperationError) -> _Response:
    return _Response(_status_code(self))


def _message(self: HttpOperationError) -> str:
    return str(self.args[0]) if self.args else ""


# The HTTP status and the hub's error code of a failed registry operation, as attributes; as
# in msrest, also ``response.status_code`` and ``message``.
HttpOperationError.status_code = property(_status_code)  # type: ignore[assignment]
HttpOperationError.error_code = property(_error_code)  # type: ignore[assignment]
HttpOperationError.response = property(_response)  # type: ignore[assignment]
HttpOperationError.message = property(_message)  # type: ignore[assignment]

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
