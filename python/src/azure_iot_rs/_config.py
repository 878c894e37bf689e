"""The ``create_from_*`` factories shared by the sync and aio clients: they check their
arguments and make the native client (which checks the credentials and the CA at once)."""

import os
import time
import urllib.parse
from typing import Any, Dict, Optional, Set, Tuple

from ._native import NativeDeviceClient
from .models import X509, ProxyOptions

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
    names (else ``TypeError``), no ``proxy_options`` (``ValueError``: the device clients take
    it out first, see ``_options``; the provisioning client does not support proxies yet),
    ``transport`` and ``websockets`` folded into the native transport name, every other value
    of its type (else ``TypeError`` naming it)."""
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"unsupported keyword argument(s): {', '.join(unknown)}")
    if kwargs.get("proxy_options") is not None:
        raise ValueError("proxy_options: the provisioning client does not support proxies yet")
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


def _options(kwargs: Dict[str, Any], allowed: Set[str] = _OPTIONS) -> Dict[str, Any]:
    kwargs = dict(kwargs)
    proxy = _proxy_arg(kwargs.pop("proxy_options", None))
    options = checked_options(kwargs, allowed)
    if proxy is not None:
        options["proxy"] = proxy
    return options


def _proxy_arg(proxy_options: Any) -> Optional[Tuple[str, int, Optional[str], Optional[str]]]:
    """The native proxy (host, port, user, password) of a ``ProxyOptions``: HTTP only (the
    Rust client tunnels with ``CONNECT``); SOCKS4 and SOCKS5 are a ``ValueError`` naming them.
    As in azure-iot-device, the proxy carries every connection of the client: MQTT, MQTT over
    WebSockets and the HTTPS requests of file upload (and here AMQP too)."""
    if proxy_options is None:
        return None
    if not isinstance(proxy_options, ProxyOptions):
        raise TypeError(f"proxy_options must be a ProxyOptions, not {type(proxy_options).__name__}")
    if proxy_options.proxy_type != "HTTP":
        raise ValueError(
            f"proxy_options: {proxy_options.proxy_type} proxies are not supported by azure_iot_rs "
            "(only HTTP proxies, tunnelling with CONNECT)"
        )
    address = _need_str("proxy_options.proxy_address", proxy_options.proxy_address)
    if not 0 < proxy_options.proxy_port < 65536:
        raise ValueError(f"proxy_options.proxy_port {proxy_options.proxy_port} is not a port")
    user = proxy_options.proxy_username
    password = proxy_options.proxy_password
    if user is not None:
        _need_str("proxy_options.proxy_username", user)
    if password is not None:
        _need_str("proxy_options.proxy_password", password)
    return address, proxy_options.proxy_port, user, password


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
    fields = dict(part.split("=", 1) for part in cs.split(";") if "=" in part)
    token = fields.get("SharedAccessSignature")
    if token is not None:
        # A token, not a key: the client takes updates (update_sastoken), as azure-iot-device's.
        options = _options(kwargs)
        if fields.get("GatewayHostName"):
            options["gateway_hostname"] = fields["GatewayHostName"]
        return _sastoken_client(token, module, options)
    return NativeDeviceClient("connection_string", cs, **_options(kwargs))


def from_sastoken(sastoken: Any, module: bool, kwargs: Dict[str, Any]) -> NativeDeviceClient:
    return _sastoken_client(_need_str("sastoken", sastoken), module, _options(kwargs))


def _sastoken_client(token: str, module: bool, options: Dict[str, Any]) -> NativeDeviceClient:
    host, device_id, module_id = token_identity(token)
    if module != (module_id is not None):
        raise ValueError("Provided SasToken is for a " + ("device" if module_id is None else "module"))
    if token_expiry(token) < time.time():
        raise ValueError("Provided SasToken has already expired")
    return NativeDeviceClient(
        "sastoken", token, hostname=host, device_id=device_id, module_id=module_id, **options
    )


def token_expiry(token: str) -> int:
    """A SAS token's ``se`` (``ValueError`` if it has none)."""
    fields = urllib.parse.parse_qs(token[len("SharedAccessSignature "):])
    try:
        return int(fields["se"][0])
    except (KeyError, ValueError) as e:
        raise ValueError("Invalid SasToken provided") from e


def token_identity(token: str) -> Tuple[str, str, Optional[str]]:
    """(host, device id, module id) from a SAS token's ``sr`` (``ValueError`` if it is not a
    device's or a module's token)."""
    if not token.startswith("SharedAccessSignature "):
        raise ValueError("Invalid SasToken provided: it must start with 'SharedAccessSignature '")
    fields = urllib.parse.parse_qs(token[len("SharedAccessSignature "):])
    resource = urllib.parse.unquote(fields.get("sr", [""])[0])
    parts = resource.split("/")
    if len(parts) == 3 and parts[1] == "devices":
        return parts[0], urllib.parse.unquote(parts[2]), None
    if len(parts) == 5 and parts[1] == "devices" and parts[3] == "modules":
        return parts[0], urllib.parse.unquote(parts[2]), urllib.parse.unquote(parts[4])
    raise ValueError("Invalid SasToken provided: sr must be {host}/devices/{id}[/modules/{id}]")


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


def connection_string_token(connection_string: str) -> Optional[str]:
    """The ``SharedAccessSignature`` of a connection string, if it holds a token."""
    for part in connection_string.split(";"):
        name, _, value = part.partition("=")
        if name.strip() == "SharedAccessSignature":
            return value
    return None


#: The variables an IoT Edge runtime sets for a module (azure-iot-device 2.x reads the same).
_EDGE_VARIABLES = (
    "IOTEDGE_IOTHUBHOSTNAME",
    "IOTEDGE_DEVICEID",
    "IOTEDGE_MODULEID",
    "IOTEDGE_GATEWAYHOSTNAME",
    "IOTEDGE_MODULEGENERATIONID",
    "IOTEDGE_WORKLOADURI",
    "IOTEDGE_APIVERSION",
)


def from_edge_environment(kwargs: Dict[str, Any]) -> NativeDeviceClient:
    """A module client from the IoT Edge environment, as azure-iot-device 2.x makes it: the
    ``IOTEDGE_*`` variables (trust bundle and token signatures from the workload API, the
    connection to ``IOTEDGE_GATEWAYHOSTNAME``), else the local-debugging pair
    ``EdgeHubConnectionString`` + ``EdgeModuleCACertificateFile``; neither: ``OSError``."""
    for name in ("server_verification_cert", "gateway_hostname"):
        if name in kwargs:
            raise TypeError(f"unsupported keyword argument(s): {name}")
    options = _options(kwargs)
    env = os.environ
    if all(name in env for name in _EDGE_VARIABLES):
        scheme = env.get("IOTEDGE_AUTHSCHEME", "sasToken")
        if scheme.lower() != "sastoken":
            raise ValueError(f"IOTEDGE_AUTHSCHEME {scheme!r}: only sasToken is supported")
        return NativeDeviceClient(
            "edge",
            (env["IOTEDGE_WORKLOADURI"], env["IOTEDGE_MODULEGENERATIONID"], env["IOTEDGE_APIVERSION"]),
            hostname=env["IOTEDGE_IOTHUBHOSTNAME"],
            device_id=env["IOTEDGE_DEVICEID"],
            module_id=env["IOTEDGE_MODULEID"],
            gateway_hostname=env["IOTEDGE_GATEWAYHOSTNAME"],
            **options,
        )
    try:
        connection_string = env["EdgeHubConnectionString"]
        ca_file = env["EdgeModuleCACertificateFile"]
    except KeyError as e:
        raise OSError("IoT Edge environment not configured correctly") from e
    try:
        with open(ca_file, encoding="utf-8") as f:
            ca = f.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ValueError("Invalid CA certificate file") from e
    fields = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    if not all(fields.get(k) for k in ("DeviceId", "ModuleId", "HostName", "GatewayHostName")):
        raise ValueError("Invalid Connection String")
    options["server_verification_cert"] = ca
    return NativeDeviceClient("connection_string", connection_string, **options)
