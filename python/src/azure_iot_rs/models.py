"""Device-side models with the attribute names of ``azure.iot.device``: ``Message``,
``MethodRequest``, ``MethodResponse``, ``X509``, and the provisioning client's
``RegistrationResult`` and ``RegistrationState``."""

import datetime
import json
from typing import Any, Dict, List, Optional, Tuple, Union

#: The system properties a ``Message`` carries, by attribute name.
_SYSTEM = (
    "message_id",
    "correlation_id",
    "user_id",
    "content_type",
    "content_encoding",
    "output_name",
    "input_name",
    "iothub_interface_id",
    "ack",
)


class Message:
    """A telemetry, output or cloud-to-device message.

    ``data`` is ``str`` (sent as UTF-8) or ``bytes``; ``custom_properties`` are application
    properties (str to str); ``expiry_time_utc`` is an ISO 8601 string or an aware
    ``datetime``."""

    def __init__(
        self,
        data: Union[str, bytes, bytearray],
        message_id: Optional[str] = None,
        content_encoding: Optional[str] = None,
        content_type: Optional[str] = None,
        output_name: Optional[str] = None,
    ) -> None:
        self.data = data
        self.custom_properties: Dict[str, str] = {}
        self.message_id = message_id
        self.correlation_id: Optional[str] = None
        self.user_id: Optional[str] = None
        self.content_encoding = content_encoding
        self.content_type = content_type
        self.output_name = output_name
        self.input_name: Optional[str] = None
        self.expiry_time_utc: Optional[Union[str, datetime.datetime]] = None
        self.ack: Optional[str] = None
        self.iothub_interface_id: Optional[str] = None

    def __str__(self) -> str:
        return str(self.data)

    def __repr__(self) -> str:
        return f"Message(data={self.data!r}, message_id={self.message_id!r})"

    def get_size(self) -> int:
        """The size of the body and properties, roughly as IoT Hub counts it."""
        size = len(self._body())
        size += sum(len(k) + len(v) for k, v in self.custom_properties.items())
        size += sum(len(v) for v in (getattr(self, n) for n in _SYSTEM) if isinstance(v, str))
        return size

    def set_as_security_message(self) -> None:
        """Marks the message as an Azure Security Center message."""
        self.iothub_interface_id = "urn:azureiot:Security:SecurityAgent:1"

    def _body(self) -> bytes:
        if isinstance(self.data, str):
            return self.data.encode("utf-8")
        if isinstance(self.data, (bytes, bytearray)):
            return bytes(self.data)
        raise TypeError(f"Message.data must be str or bytes, not {type(self.data).__name__}")

    def _to_native(self) -> Tuple[bytes, List[Tuple[str, str]], List[Tuple[str, str]]]:
        """(body, custom properties, system properties) as the native client takes them (the
        per-send path: attributes read from ``__dict__`` once, no per-name ``getattr``)."""
        custom = self.custom_properties
        for name, value in custom.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(f"custom_properties[{name!r}] must map str to str")
        fields = self.__dict__
        system: List[Tuple[str, Any]] = [(name, fields.get(name)) for name in _SYSTEM if fields.get(name) is not None]
        for name, value in system:
            if not isinstance(value, str):
                raise TypeError(f"Message.{name} must be str, not {type(value).__name__}")
        expiry = self.expiry_time_utc
        if expiry is not None:
            if isinstance(expiry, datetime.datetime):
                if expiry.tzinfo is None:
                    expiry = expiry.replace(tzinfo=datetime.timezone.utc)
                expiry = expiry.isoformat()
            if not isinstance(expiry, str):
                raise TypeError("Message.expiry_time_utc must be str or datetime")
            system.append(("expiry_time_utc", expiry))
        data = self.data
        body = data.encode("utf-8") if type(data) is str else self._body()
        return body, list(custom.items()), system

    @classmethod
    def _from_native(cls, fields: Dict[str, Any]) -> "Message":
        message = cls(fields["data"])
        message.custom_properties = dict(fields["custom_properties"])
        for name in _SYSTEM:
            setattr(message, name, fields.get(name))
        message.expiry_time_utc = fields.get("expiry_time_utc")
        return message


class MethodRequest:
    """A direct method call received by the device."""

    def __init__(self, request_id: str, name: str, payload: Any) -> None:
        self.request_id = request_id
        self.name = name
        self.payload = payload

    def __repr__(self) -> str:
        return f"MethodRequest(request_id={self.request_id!r}, name={self.name!r})"


class MethodResponse:
    """The device's answer to a ``MethodRequest``; ``payload`` must be JSON-serializable."""

    def __init__(self, request_id: str, status: int, payload: Any = None) -> None:
        self.request_id = request_id
        self.status = status
        self.payload = payload

    @classmethod
    def create_from_method_request(
        cls, method_request: MethodRequest, status: int, payload: Any = None
    ) -> "MethodResponse":
        """The response to ``method_request``."""
        return cls(method_request.request_id, status, payload)


class X509:
    """A device certificate and its private key, from PEM files (``pass_phrase``: encrypted
    keys are not supported yet, a ``ValueError`` says so)."""

    def __init__(self, cert_file: str, key_file: str, pass_phrase: Optional[str] = None) -> None:
        if pass_phrase is not None:
            raise ValueError("pass_phrase: encrypted private keys are not supported yet")
        self.cert_file = cert_file
        self.key_file = key_file
        self.pass_phrase = pass_phrase

    def _pems(self) -> Tuple[str, str]:
        with open(self.cert_file, encoding="ascii") as cert, open(self.key_file, encoding="ascii") as key:
            return cert.read(), key.read()


class ProxyOptions:
    """A proxy to reach the hub through (azure-iot-device's ``ProxyOptions``): ``proxy_type``
    ``"HTTP"``, ``"SOCKS4"`` or ``"SOCKS5"`` (or PySocks' constants 3, 1, 2), the proxy's
    address and port, and optionally a user name and password. This package tunnels through
    HTTP proxies only (``CONNECT``, with Basic authentication when a user name is given); a
    client given a SOCKS proxy raises ``ValueError`` naming it. The password never appears in
    ``repr``."""

    _TYPES = {"HTTP": "HTTP", "SOCKS4": "SOCKS4", "SOCKS5": "SOCKS5", 3: "HTTP", 1: "SOCKS4", 2: "SOCKS5"}

    def __init__(
        self,
        proxy_type: Any,
        proxy_addr: str,
        proxy_port: Any,
        proxy_username: Optional[str] = None,
        proxy_password: Optional[str] = None,
    ) -> None:
        if isinstance(proxy_type, bool) or proxy_type not in self._TYPES:
            raise ValueError("Invalid Proxy Type")
        self._proxy_type = self._TYPES[proxy_type]
        self._proxy_addr = proxy_addr
        self._proxy_port = int(proxy_port)
        self._proxy_username = proxy_username
        self._proxy_password = proxy_password

    @property
    def proxy_type(self) -> str:
        """``"HTTP"``, ``"SOCKS4"`` or ``"SOCKS5"``."""
        return self._proxy_type

    @property
    def proxy_address(self) -> str:
        """The proxy's IP address or DNS name."""
        return self._proxy_addr

    @property
    def proxy_port(self) -> int:
        """The proxy's port."""
        return self._proxy_port

    @property
    def proxy_username(self) -> Optional[str]:
        """The user name for the proxy, if any."""
        return self._proxy_username

    @property
    def proxy_password(self) -> Optional[str]:
        """The password for the proxy, if any (never shown by ``repr``)."""
        return self._proxy_password

    def __repr__(self) -> str:
        user = f", proxy_username={self._proxy_username!r}" if self._proxy_username is not None else ""
        return f"ProxyOptions({self._proxy_type!r}, {self._proxy_addr!r}, {self._proxy_port}{user})"


class RegistrationState:
    """DPS's record of a registration (the attributes of azure-iot-device's
    ``RegistrationState``): ``device_id``, ``assigned_hub``, ``sub_status``
    (``initialAssignment``, ``deviceDataMigrated``, ``deviceDataReset``),
    ``created_date_time`` and ``last_update_date_time`` (UTC, ISO 8601 text), ``etag``, and
    ``response_payload``: what a custom allocation webhook returned for the device, as JSON
    text (``"null"`` when nothing)."""

    def __init__(
        self,
        device_id: Optional[str] = None,
        assigned_hub: Optional[str] = None,
        sub_status: Optional[str] = None,
        created_date_time: Optional[str] = None,
        last_update_date_time: Optional[str] = None,
        etag: Optional[str] = None,
        payload: Any = None,
    ) -> None:
        self.device_id = device_id
        self.assigned_hub = assigned_hub
        self.sub_status = sub_status
        self.created_date_time = created_date_time
        self.last_update_date_time = last_update_date_time
        self.etag = etag
        self._response_payload = payload

    @property
    def response_payload(self) -> str:
        """The webhook's payload for the device as JSON text (keys sorted)."""
        return json.dumps(self._response_payload, sort_keys=True)

    def __str__(self) -> str:
        return "\n".join(str(v) for v in (self.device_id, self.assigned_hub, self.sub_status, self.response_payload))


class RegistrationResult:
    """The outcome of ``ProvisioningDeviceClient.register`` (the attributes of azure-iot-device's
    ``RegistrationResult``): ``operation_id``, ``status`` and ``registration_state``."""

    def __init__(self, operation_id: str, status: str, registration_state: Optional[RegistrationState] = None) -> None:
        self.operation_id = operation_id
        self.status = status
        self.registration_state = registration_state

    @classmethod
    def _from_native(cls, operation_id: str, status: str, state: Dict[str, Any]) -> "RegistrationResult":
        """From the native answer: DPS's registration record as it sent it (camelCase)."""
        return cls(
            operation_id,
            status,
            RegistrationState(
                device_id=state.get("deviceId"),
                assigned_hub=state.get("assignedHub"),
                sub_status=state.get("substatus"),
                created_date_time=state.get("createdDateTimeUtc"),
                last_update_date_time=state.get("lastUpdatedDateTimeUtc"),
                etag=state.get("etag"),
                payload=state.get("payload"),
            ),
        )

    def __str__(self) -> str:
        return f"{self.registration_state}\n{self.status}"


def _json_text(what: str, value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be JSON-serializable: {e}") from None
