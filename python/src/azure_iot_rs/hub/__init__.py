"""Service side (the API of ``azure.iot.hub``): ``IoTHubRegistryManager``."""

import json
import os
from typing import Any, Dict, Optional, Union

from .._native import NativeRegistryManager
from ..models import _json_text
from .models import CloudToDeviceMethod, CloudToDeviceMethodResult, Device, Module, Twin


def _ca_bundle_from_environment() -> Optional[str]:
    """The PEM text of the file ``requests`` would trust: ``REQUESTS_CA_BUNDLE``, else
    ``CURL_CA_BUNDLE`` (None when neither names a file; a directory is left to the OS roots)."""
    path = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if not path or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


class IoTHubRegistryManager:
    """Registry, twins, direct methods and cloud-to-device messages of one hub.

    Besides ``connection_string`` it takes (this package's own keywords) the CA to trust as
    PEM text, ``server_verification_cert``, and non-standard ports, ``https_port`` and
    ``amqp_port`` (for the emulator). Without ``server_verification_cert`` it trusts, as
    azure-iot-hub does through ``requests``, the CA bundle file named by the environment
    variable ``REQUESTS_CA_BUNDLE`` (else ``CURL_CA_BUNDLE``), and the operating system's roots
    when neither names a file. Failed operations raise
    ``azure_iot_rs.exceptions.HttpOperationError`` (``status_code``, ``error_code``)."""

    def __init__(
        self,
        connection_string: str,
        server_verification_cert: Optional[str] = None,
        https_port: Optional[int] = None,
        amqp_port: Optional[int] = None,
    ) -> None:
        if not isinstance(connection_string, str):
            raise TypeError("connection_string must be str")
        if server_verification_cert is None:
            server_verification_cert = _ca_bundle_from_environment()
        self._native = NativeRegistryManager(connection_string, server_verification_cert, https_port, amqp_port)

    @classmethod
    def from_connection_string(cls, connection_string: str, **kwargs: Any) -> "IoTHubRegistryManager":
        """A registry manager from a service connection string."""
        return cls(connection_string, **kwargs)

    def create_device_with_sas(
        self, device_id: str, primary_key: str, secondary_key: str, status: str, iot_edge: bool = False
    ) -> Device:
        """Creates a device with keys (empty strings: the hub generates them)."""
        doc = self._native.create_device_with_sas(device_id, primary_key or "", secondary_key or "", status, iot_edge)
        return Device._from_hub(json.loads(doc))

    def create_device_with_x509(
        self,
        device_id: str,
        primary_thumbprint: str,
        secondary_thumbprint: Optional[str],
        status: str,
        iot_edge: bool = False,
    ) -> Device:
        """Creates a device authenticated by self-signed certificates of these SHA-1
        thumbprints (hex)."""
        doc = self._native.create_device_with_x509(device_id, primary_thumbprint, secondary_thumbprint or None, status, iot_edge)
        return Device._from_hub(json.loads(doc))

    def create_module_with_sas(
        self, device_id: str, module_id: str, managed_by: Optional[str], primary_key: str, secondary_key: str
    ) -> Module:
        """Creates a module with keys (empty strings: the hub generates them); ``managed_by``
        is accepted for compatibility and not sent."""
        doc = self._native.create_module_with_sas(device_id, module_id, primary_key or "", secondary_key or "")
        return Module._from_hub(json.loads(doc))

    def get_device(self, device_id: str) -> Device:
        """The device."""
        return Device._from_hub(json.loads(self._native.get_device(device_id)))

    def delete_device(self, device_id: str, etag: Optional[str] = None) -> None:
        """Deletes the device (only if its ETag is still ``etag``, when given)."""
        self._native.delete_device(device_id, etag)

    def get_twin(self, device_id: str) -> Twin:
        """The device's twin."""
        return Twin._from_hub(json.loads(self._native.get_twin(device_id)))

    def update_twin(self, device_id: str, device_twin: Twin, etag: Optional[str] = None) -> Twin:
        """Merges ``device_twin``'s tags and desired properties into the twin."""
        if not isinstance(device_twin, Twin):
            raise TypeError("device_twin must be a Twin")
        doc = self._native.update_twin(device_id, _json_text("device_twin", device_twin._to_patch()), etag)
        return Twin._from_hub(json.loads(doc))

    def invoke_device_method(self, device_id: str, direct_method_request: CloudToDeviceMethod) -> CloudToDeviceMethodResult:
        """Calls a direct method on the device and returns its answer."""
        return self._invoke(device_id, None, direct_method_request)

    def invoke_device_module_method(
        self, device_id: str, module_id: str, direct_method_request: CloudToDeviceMethod
    ) -> CloudToDeviceMethodResult:
        """Calls a direct method on a module and returns its answer."""
        return self._invoke(device_id, module_id, direct_method_request)

    def _invoke(
        self, device_id: str, module_id: Optional[str], request: CloudToDeviceMethod
    ) -> CloudToDeviceMethodResult:
        if not isinstance(request, CloudToDeviceMethod):
            raise TypeError("direct_method_request must be a CloudToDeviceMethod")
        status, payload = self._native.invoke_method(
            device_id,
            module_id,
            request.method_name,
            _json_text("payload", request.payload),
            request.response_timeout_in_seconds,
            request.connect_timeout_in_seconds,
        )
        return CloudToDeviceMethodResult(status, json.loads(payload))

    def send_c2d_message(
        self, device_id: str, message: Union[str, bytes], properties: Optional[Dict[str, str]] = None
    ) -> None:
        """Queues a cloud-to-device message. As in azure-iot-hub, the ``properties`` keys
        ``messageId``, ``correlationId``, ``contentType``, ``contentEncoding`` and
        ``expiryTimeUtc`` (milliseconds since the epoch) set the message's system properties,
        ``iothub-ack`` (``full``, ``positive``, ``negative``) asks for feedback, and every other
        key is an application property. Values are converted with ``str``."""
        if isinstance(message, str):
            data = message.encode("utf-8")
        elif isinstance(message, (bytes, bytearray)):
            data = bytes(message)
        else:
            raise TypeError("message must be str or bytes")
        if properties is not None and not isinstance(properties, dict):
            raise TypeError("properties must be a dict")
        items = [(str(k), str(v)) for k, v in (properties or {}).items()]
        self._native.send_c2d_message(device_id, data, items)


__all__ = ["IoTHubRegistryManager"]
