"""What the sync and aio clients share: the factories, the handler properties and turning a
native event into a handler call."""

import json
import logging
import time
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar

from . import _config, exceptions
from ._native import NativeDeviceClient
from .exceptions import ClientError
from .models import Message, MethodRequest, MethodResponse, X509, _json_text

log = logging.getLogger("azure_iot_rs")

#: The handler property each native event kind goes to, and the feature it turns on.
HANDLERS = {
    "message": ("on_message_received", "messages"),
    "method": ("on_method_request_received", "methods"),
    "twin_patch": ("on_twin_desired_properties_patch_received", "twin_patches"),
    "connection_state": ("on_connection_state_change", None),
    "new_sastoken_required": ("on_new_sastoken_required", None),
    "background": ("on_background_exception", None),
}

C = TypeVar("C", bound="ClientBase")


def _handler_property(name: str, feature: Optional[str]) -> property:
    attr = "_" + name

    def get(self: "ClientBase") -> Optional[Callable[..., Any]]:
        return getattr(self, attr)

    def set(self: "ClientBase", handler: Optional[Callable[..., Any]]) -> None:
        if handler is not None and not callable(handler):
            raise TypeError(f"{name} must be callable or None")
        setattr(self, attr, handler)
        if feature is not None:
            if handler is None:
                self._native.disable_feature(feature)
            else:
                self._native.enable_feature(feature)
        if handler is not None:
            self._handlers_set()

    return property(get, set, doc=f"The handler called for {name[3:].replace('_', ' ')}.")


class ClientBase:
    """The factories and handler properties of a device or module client."""

    _module = False
    _on_background_exception: Optional[Callable[..., Any]]

    def __init__(self, native: NativeDeviceClient) -> None:
        self._native = native
        for name, _ in HANDLERS.values():
            setattr(self, "_" + name, None)
        #: (host, device id, module id) of a client created with a SAS token: only such a
        #: client takes ``update_sastoken``.
        self._sas_identity: Optional[Tuple[str, str, Optional[str]]] = None

    on_message_received = _handler_property("on_message_received", "messages")
    on_method_request_received = _handler_property("on_method_request_received", "methods")
    on_twin_desired_properties_patch_received = _handler_property(
        "on_twin_desired_properties_patch_received", "twin_patches"
    )
    on_connection_state_change = _handler_property("on_connection_state_change", None)
    on_background_exception = _handler_property("on_background_exception", None)
    on_new_sastoken_required = _handler_property("on_new_sastoken_required", None)
    on_new_sastoken_required.__doc__ = (
        "The handler called (without arguments) 120 s before the SAS token of a client created "
        "with one expires, as azure-iot-device 2.x does: give the client a new token with "
        "``update_sastoken``."
    )

    def _handlers_set(self) -> None:
        """A handler was set: the sync client starts its handler thread."""

    @property
    def connected(self) -> bool:
        """Whether the client is connected now."""
        return bool(self._native.connected)

    @classmethod
    def create_from_connection_string(cls: "type[C]", connection_string: str, **kwargs: Any) -> C:
        """A client from a device (or module) connection string; nothing is sent until
        ``connect`` (or the first operation)."""
        client = cls(_config.from_connection_string(connection_string, cls._module, kwargs))
        token = _config.connection_string_token(connection_string)
        if token is not None:
            client._sas_identity = _config.token_identity(token)
        return client

    @classmethod
    def create_from_sastoken(cls: "type[C]", sastoken: str, **kwargs: Any) -> C:
        """A client from a SAS token (``SharedAccessSignature sr=…&sig=…&se=…``). It cannot
        sign tokens itself: ``on_new_sastoken_required`` fires 120 s before the token expires,
        and ``update_sastoken`` gives it the next one."""
        client = cls(_config.from_sastoken(sastoken, cls._module, kwargs))
        client._sas_identity = _config.token_identity(sastoken)
        return client

    def _sastoken_update_arg(self, sastoken: Any) -> str:
        """Checks a new token as azure-iot-device 2.x's ``update_sastoken`` does:
        ``ClientError`` if the client was not created with a token; ``ValueError`` for a token
        that is not one, is for another identity or hub, or has expired."""
        identity = self._sas_identity
        if identity is None:
            raise ClientError("Cannot update sastoken when client was not created with one")
        if not isinstance(sastoken, str):
            raise TypeError(f"sastoken must be str, not {type(sastoken).__name__}")
        try:
            host, device_id, module_id = _config.token_identity(sastoken)
            expiry = _config.token_expiry(sastoken)
        except ValueError as e:
            raise ValueError("Invalid SasToken provided") from e
        if not self._module and module_id:
            raise ValueError("Provided SasToken is for a module")
        if self._module and not module_id:
            raise ValueError("Provided SasToken is for a device")
        if device_id != identity[1]:
            raise ValueError("Provided SasToken does not match existing device id")
        if module_id and module_id != identity[2]:
            raise ValueError("Provided SasToken does not match existing module id")
        if host != identity[0]:
            raise ValueError("Provided SasToken does not match existing hostname")
        if expiry < int(time.time()):
            raise ValueError("Provided SasToken has already expired")
        return sastoken

    @staticmethod
    def _method_response_args(method_response: Any) -> Tuple[str, int, str]:
        if not isinstance(method_response, MethodResponse):
            raise TypeError(f"method_response must be a MethodResponse, not {type(method_response).__name__}")
        return (
            method_response.request_id,
            int(method_response.status),
            _json_text("method_response.payload", method_response.payload),
        )

    @staticmethod
    def _message_args(message: Any) -> Tuple[bytes, Any, Any]:
        if isinstance(message, str):
            message = Message(message)
        if not isinstance(message, Message):
            raise TypeError(f"message must be a Message or str, not {type(message).__name__}")
        return message._to_native()

    @staticmethod
    def _output_message_args(message: Any, output_name: Any) -> Tuple[bytes, Any, Any]:
        if not isinstance(output_name, str) or not output_name:
            raise TypeError("output_name must be a non-empty str")
        if isinstance(message, str):
            message = Message(message)
        if not isinstance(message, Message):
            raise TypeError(f"message must be a Message or str, not {type(message).__name__}")
        body, custom, system = message._to_native()
        system = [(k, v) for k, v in system if k != "output_name"] + [("output_name", output_name)]
        return body, custom, system

    @staticmethod
    def _reported_args(reported_properties_patch: Any) -> str:
        if not isinstance(reported_properties_patch, dict):
            raise TypeError("reported_properties_patch must be a dict")
        return _json_text("reported_properties_patch", reported_properties_patch)

    @staticmethod
    def _blob_name_arg(blob_name: Any) -> str:
        if not isinstance(blob_name, str):
            raise TypeError(f"blob_name must be str, not {type(blob_name).__name__}")
        if not blob_name:
            raise ValueError("blob_name must not be empty")
        return blob_name

    @staticmethod
    def _storage_info(info: Tuple[str, str, str, str, str]) -> Dict[str, str]:
        """The native answer as azure-iot-device returns it: the hub's JSON keys."""
        keys = ("correlationId", "hostName", "containerName", "blobName", "sasToken")
        return dict(zip(keys, info))

    @staticmethod
    def _upload_status_args(
        correlation_id: Any, is_success: Any, status_code: Any, status_description: Any
    ) -> Tuple[str, bool, int, str]:
        if not isinstance(correlation_id, str) or not correlation_id:
            raise TypeError("correlation_id must be a non-empty str")
        if not isinstance(is_success, bool):
            raise TypeError(f"is_success must be bool, not {type(is_success).__name__}")
        if not isinstance(status_code, int) or isinstance(status_code, bool):
            raise TypeError(f"status_code must be int, not {type(status_code).__name__}")
        if not -(2**31) <= status_code < 2**31:
            raise ValueError(f"status_code {status_code} does not fit in 32 bits")
        if not isinstance(status_description, str):
            raise TypeError(f"status_description must be str, not {type(status_description).__name__}")
        return correlation_id, is_success, status_code, status_description

    @staticmethod
    def _upload_data_arg(data: Any) -> bytes:
        if isinstance(data, str):
            return data.encode("utf-8")
        if isinstance(data, (bytes, bytearray, memoryview)):
            return bytes(data)
        raise TypeError(f"data must be bytes, bytearray, memoryview or str, not {type(data).__name__}")

    def _handler_call(self, event: Tuple[str, Any]) -> Optional[Tuple[Callable[..., Any], Tuple[Any, ...]]]:
        """The handler an event goes to and its arguments (None: no handler set)."""
        kind, payload = event
        name, _ = HANDLERS[kind]
        handler = getattr(self, "_" + name)
        if handler is None:
            if kind == "background":
                log.warning("background error with no on_background_exception handler: %s", payload)
            return None
        if kind == "message":
            return handler, (Message._from_native(payload),)
        if kind == "method":
            method, request_id, body = payload
            return handler, (MethodRequest(request_id, method, json.loads(body)),)
        if kind == "twin_patch":
            return handler, (json.loads(payload),)
        if kind in ("connection_state", "new_sastoken_required"):
            return handler, ()
        class_name, text = payload
        error_class = getattr(exceptions, class_name, ClientError)
        return handler, (error_class(text),)

    def _report(self, error: BaseException) -> None:
        """A handler raised: to ``on_background_exception``, or the log."""
        handler = self._on_background_exception
        if handler is not None:
            try:
                handler(error)
                return
            except Exception:  # noqa: BLE001 - a failing error handler is only logged
                log.exception("on_background_exception raised")
        log.error("a handler raised: %r", error)


class DeviceFactories(ClientBase):
    """The device client's symmetric-key and X.509 factories."""

    @classmethod
    def create_from_symmetric_key(
        cls: "type[C]", symmetric_key: str, hostname: str, device_id: str, **kwargs: Any
    ) -> C:
        """A client that signs its SAS tokens with the device's key."""
        return cls(_config.from_symmetric_key(symmetric_key, hostname, device_id, None, kwargs))

    @classmethod
    def create_from_x509_certificate(cls: "type[C]", x509: X509, hostname: str, device_id: str, **kwargs: Any) -> C:
        """A client authenticated by the device's X.509 certificate."""
        return cls(_config.from_x509(x509, hostname, device_id, None, kwargs))


class ModuleFactories(ClientBase):
    """The module client's symmetric-key and X.509 factories (with ``module_id``)."""

    _module = True

    @classmethod
    def create_from_symmetric_key(
        cls: "type[C]", symmetric_key: str, hostname: str, device_id: str, module_id: str, **kwargs: Any
    ) -> C:
        """A client that signs its SAS tokens with the module's key."""
        return cls(_config.from_symmetric_key(symmetric_key, hostname, device_id, module_id, kwargs))

    @classmethod
    def create_from_x509_certificate(
        cls: "type[C]", x509: X509, hostname: str, device_id: str, module_id: str, **kwargs: Any
    ) -> C:
        """A client authenticated by the module's X.509 certificate."""
        return cls(_config.from_x509(x509, hostname, device_id, module_id, kwargs))

    @classmethod
    def create_from_edge_environment(cls: "type[C]", **kwargs: Any) -> C:
        """A module client inside an IoT Edge deployment, from the ``IOTEDGE_*`` variables the
        runtime sets: the trust bundle and the token signatures come from the Edge workload API
        (``IOTEDGE_WORKLOADURI``, a unix socket or http), the connection goes to
        ``IOTEDGE_GATEWAYHOSTNAME``. Without them, the local-debugging variables
        ``EdgeHubConnectionString`` and ``EdgeModuleCACertificateFile``. Raises ``OSError``
        when neither is set or the workload API fails, ``ValueError`` for bad debugging
        variables or a token the workload API will not sign, ``TypeError`` for
        ``server_verification_cert`` or ``gateway_hostname`` (the environment gives both)."""
        return cls(_config.from_edge_environment(kwargs))
