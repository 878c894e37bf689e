"""``ProvisioningDeviceClient`` (the API of ``azure.iot.device.ProvisioningDeviceClient``): the
factories and ``provisioning_payload`` the sync and aio clients share, and the sync client.

A registration runs in the Rust core (``azure_iot_provisioning_device``): MQTT by default,
MQTT over WebSockets with ``websockets=True``, and, as this package's own option,
``transport="amqp"`` or ``"https"``. Errors are raised as the official client raises them:
``CredentialError`` (DPS refused the key or certificate), ``ConnectionFailedError`` (DPS could
not be reached), ``OperationTimeout`` (no assignment within ``timeout``, 30 s by default),
``ClientError`` with the ``ServiceError`` DPS answered as its ``__cause__`` (a disabled or failed
registration, an unknown enrollment), and ``ClientError`` for a client already shut down or
already registered."""

import json
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional, Tuple, TypeVar

from ._config import _need_str, checked_options
from ._native import NativeProvisioningClient
from .exceptions import ClientError, ServiceError
from .models import X509, RegistrationResult, _json_text

P = TypeVar("P", bound="ProvisioningClientBase")

#: The keyword arguments of azure-iot-device's provisioning factories this package takes, plus
#: its own: ``transport`` ("mqtt", "amqp" or "https"), ``port`` (a non-standard DPS port, e.g.
#: the emulator's) and ``timeout`` (seconds the whole registration may take).
_OPTIONS = {
    "server_verification_cert",
    "websockets",
    "gateway_hostname",
    "proxy_options",
    "keep_alive",
    "sastoken_ttl",
    "transport",
    "port",
    "timeout",
}


def _options(kwargs: Dict[str, Any], x509: bool) -> Dict[str, Any]:
    if x509 and "sastoken_ttl" in kwargs:  # as the official client: X.509 signs no token
        raise TypeError("unsupported keyword argument(s): sastoken_ttl")
    options = checked_options(kwargs, _OPTIONS)
    for name in ("keep_alive", "sastoken_ttl"):
        if options.get(name, 1) <= 0:
            raise ValueError(f"{name} must be positive")
    # A registration is one short exchange: the MQTT keep-alive of the Rust client applies;
    # keep_alive is checked and accepted so that code written for the official client runs.
    options.pop("keep_alive", None)
    return options


@contextmanager
def _official_errors() -> Iterator[None]:
    """A registration DPS refused or ended is a ``ClientError`` caused by the ``ServiceError``,
    as the official client raises it."""
    try:
        yield
    except ServiceError as e:
        raise ClientError(f"the registration did not succeed: {e}") from e


class ProvisioningClientBase:
    """The factories and ``provisioning_payload`` of the sync and aio provisioning clients."""

    def __init__(self, native: NativeProvisioningClient) -> None:
        self._native = native
        self._provisioning_payload: Any = None
        self._done: Optional[str] = None  # why register may not run again

    @classmethod
    def create_from_symmetric_key(
        cls: "type[P]", provisioning_host: str, registration_id: str, id_scope: str, symmetric_key: str, **kwargs: Any
    ) -> P:
        """A client that registers with an enrollment's symmetric key (for an enrollment
        group, the device key derived from the group key and ``registration_id``)."""
        return cls(
            NativeProvisioningClient(
                "symmetric_key",
                _need_str("symmetric_key", symmetric_key),
                _need_str("provisioning_host", provisioning_host),
                _need_str("registration_id", registration_id),
                _need_str("id_scope", id_scope),
                **_options(kwargs, x509=False),
            )
        )

    @classmethod
    def create_from_x509_certificate(
        cls: "type[P]", provisioning_host: str, registration_id: str, id_scope: str, x509: X509, **kwargs: Any
    ) -> P:
        """A client that registers with the device's X.509 certificate (presented in TLS)."""
        if not isinstance(x509, X509):
            raise TypeError(f"x509 must be an X509, not {type(x509).__name__}")
        options = _options(kwargs, x509=True)  # before the files are read
        return cls(
            NativeProvisioningClient(
                "x509",
                x509._pems(),
                _need_str("provisioning_host", provisioning_host),
                _need_str("registration_id", registration_id),
                _need_str("id_scope", id_scope),
                **options,
            )
        )

    @property
    def provisioning_payload(self) -> Any:
        """Data sent with the registration (any JSON-serialisable object), for a custom
        allocation webhook; ``None`` sends none."""
        return self._provisioning_payload

    @provisioning_payload.setter
    def provisioning_payload(self, provisioning_payload: Any) -> None:
        _json_text("provisioning_payload", provisioning_payload)  # fails now, not at register
        self._provisioning_payload = provisioning_payload

    def _payload_arg(self) -> Optional[str]:
        if self._done is not None:
            raise ClientError(self._done)
        if self._provisioning_payload is None:
            return None
        return _json_text("provisioning_payload", self._provisioning_payload)

    def _result(self, native: Tuple[str, str, str]) -> RegistrationResult:
        """The model of a finished registration; the client is done (as the official one,
        which shuts itself down once assigned)."""
        self._done = "the client has already registered the device (it is shut down)"
        operation_id, status, state = native
        return RegistrationResult._from_native(operation_id, status, json.loads(state))


class ProvisioningDeviceClient(ProvisioningClientBase):
    """Registers a device with the Device Provisioning Service (the API of
    ``azure.iot.device.ProvisioningDeviceClient``). ``register`` blocks with the GIL released;
    Ctrl-C interrupts it."""

    def register(self) -> RegistrationResult:
        """Registers the device and returns the assignment (``status`` ``"assigned"``)."""
        payload = self._payload_arg()
        with _official_errors():
            return self._result(self._native.register(payload))

    def shutdown(self) -> None:
        """Ends the client: a later ``register`` raises ``ClientError``."""
        self._done = "the client has been shut down"


__all__ = ["ProvisioningDeviceClient"]
