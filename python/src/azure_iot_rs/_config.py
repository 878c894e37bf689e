"""The ``create_from_*`` factories shared by the sync and aio clients: they check their
arguments and make the native client (which checks the credentials and the CA at once)."""

import urllib.parse
from typing import Any, Dict, Optional, Set, Tuple

from ._native import NativeDeviceClient
from .models import X509

#: The keyword arguments of azure-iot-device's factories this package takes, plus its own:
#: ``transport`` ("mqtt", "amqp" or "https"), ``port`` (a non-standard hub port, e.g. the
#: emulator's), ``https_port`` (the hub's HTTPS port for file upload, when not 443) and
#: ``operation_timeout`` (seconds).
_OPTIONS = {
    "server_verification_cert",
    "websockets",
    "gateway_hostname",
    "keep_alive",
    "product_info",
    "proxy_options",
    "sastoken_ttl",
    "connection_retry",
    "connection_retry_interval",
    "transport",
    "port",
    "https_port",
    "operation_timeout",
}


#: The type each keyword option must have (the device clients' and the provisioning client's).
_TYPES: Dict[str, Any] = {
    "server_verification_cert": str,
    "gateway_hostname": str,
    "product_info": str,
    "keep_alive": int,
    "sastoken_ttl": int,
    "port": int,
    "https_port": int,
    "connection_retry": bool,
    "connection_retry_interval": (int, float),
    "operation_timeout": (int, float),
    "timeout": (int, float),
}


def checked_options(kwargs: Dict[str, Any], allowed: Set[str]) -> Dict[str, Any]:
    """The native client's keyword arguments from a factory's ``kwargs``: only ``allowed``
    names (else ``TypeError``), no ``proxy_options`` (``ValueError``: not supported yet),
    ``transport`` and ``websockets`` folded into the native transport name, every other value
    of its type (else ``TypeError`` naming it)."""
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"unsupported keyword argument(s): {', '.join(unknown)}")
    if kwargs.get("proxy_options") is not None:
        raise ValueError("proxy_options: HTTP proxies are not supported by this package yet")
    transport = kwargs.get("transport", "mqtt")
    if transport not in ("mqtt", "amqp", "https"):
        raise ValueError(f"transport must be 'mqtt', 'amqp' or 'https', not {transport!r}")
    if kwargs.get("websockets") and transport == "https":
        raise ValueError("websockets: the https transport has no WebSocket variant")
    if kwargs.get("websockets"):
        transport += "_ws"
    options: Dict[str, Any] = {"transport": transport}
    for name, kind in _TYPES.items():
        value = kwargs.get(name)
        if value is None or name not in allowed:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(f"{name} has the wrong type: {type(value).__name__}")
        options[name] = value
    return options


def _options(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    return checked_options(kwargs, _OPTIONS)


def _need_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    return value


def from_connection_string(connection_string: Any, module: bool, kwargs: Dict[str, Any]) -> NativeDeviceClient:
    cs = _need_str("connection_string", connection_string)
    has_module = any(part.strip().lower().startswith("moduleid=") for part in cs.split(";"))
    if has_module != module:
        raise ValueError(
            "connection_string has a ModuleId: use IoTHubModuleClient"
            if has_module
            else "connection_string has no ModuleId: a module client needs a module's connection string"
        )
    return NativeDeviceClient("connection_string", cs, **_options(kwargs))


def from_sastoken(sastoken: Any, module: bool, kwargs: Dict[str, Any]) -> NativeDeviceClient:
    token = _need_str("sastoken", sastoken)
    host, device_id, module_id = _token_resource(token)
    if module != (module_id is not None):
        raise ValueError("sastoken: its resource is a " + ("device" if module_id is None else "module"))
    parts = [f"HostName={host}", f"DeviceId={device_id}"]
    if module_id is not None:
        parts.append(f"ModuleId={module_id}")
    parts.append(f"SharedAccessSignature={token}")
    return NativeDeviceClient("connection_string", ";".join(parts), **_options(kwargs))


def _token_resource(token: str) -> Tuple[str, str, Optional[str]]:
    """(host, device id, module id) from a SAS token's ``sr``."""
    if not token.startswith("SharedAccessSignature "):
        raise ValueError("sastoken must start with 'SharedAccessSignature '")
    fields = urllib.parse.parse_qs(token[len("SharedAccessSignature "):])
    resource = urllib.parse.unquote(fields.get("sr", [""])[0])
    parts = resource.split("/")
    if len(parts) == 3 and parts[1] == "devices":
        return parts[0], urllib.parse.unquote(parts[2]), None
    if len(parts) == 5 and parts[1] == "devices" and parts[3] == "modules":
        return parts[0], urllib.parse.unquote(parts[2]), urllib.parse.unquote(parts[4])
    raise ValueError("sastoken: sr must be {host}/devices/{id}[/modules/{id}]")


def from_symmetric_key(
    symmetric_key: Any, hostname: Any, device_id: Any, module_id: Any, kwargs: Dict[str, Any]
) -> NativeDeviceClient:
    return NativeDeviceClient(
        "symmetric_key",
        _need_str("symmetric_key", symmetric_key),
        hostname=_need_str("hostname", hostname),
        device_id=_need_str("device_id", device_id),
        module_id=None if module_id is None else _need_str("module_id", module_id),
        **_options(kwargs),
    )


def from_x509(
    x509: Any, hostname: Any, device_id: Any, module_id: Any, kwargs: Dict[str, Any]
) -> NativeDeviceClient:
    if not isinstance(x509, X509):
        raise TypeError(f"x509 must be an X509, not {type(x509).__name__}")
    return NativeDeviceClient(
        "x509",
        x509._pems(),
        hostname=_need_str("hostname", hostname),
        device_id=_need_str("device_id", device_id),
        module_id=None if module_id is None else _need_str("module_id", module_id),
        **_options(kwargs),
    )
