"""Registry models with the attribute names of ``azure.iot.hub.models``, built from the hub's
JSON."""

from typing import Any, Dict, Optional


class SymmetricKey:
    """A pair of shared access keys (base64)."""

    def __init__(self, primary_key: Optional[str] = None, secondary_key: Optional[str] = None) -> None:
        self.primary_key = primary_key
        self.secondary_key = secondary_key

    def __repr__(self) -> str:  # keys are secrets: never shown
        return "SymmetricKey(primary_key=..., secondary_key=...)"


class X509Thumbprint:
    """Thumbprints of a self-signed device certificate."""

    def __init__(self, primary_thumbprint: Optional[str] = None, secondary_thumbprint: Optional[str] = None) -> None:
        self.primary_thumbprint = primary_thumbprint
        self.secondary_thumbprint = secondary_thumbprint


class AuthenticationMechanism:
    """How an identity authenticates: ``type`` is sas, selfSigned, certificateAuthority or none."""

    def __init__(
        self,
        type: Optional[str] = None,
        symmetric_key: Optional[SymmetricKey] = None,
        x509_thumbprint: Optional[X509Thumbprint] = None,
    ) -> None:
        self.type = type
        self.symmetric_key = symmetric_key
        self.x509_thumbprint = x509_thumbprint


class DeviceCapabilities:
    """What a device can do."""

    def __init__(self, iot_edge: bool = False) -> None:
        self.iot_edge = iot_edge


class Device:
    """A device identity of the registry."""

    def __init__(self, **fields: Any) -> None:
        self.device_id: Optional[str] = fields.get("device_id")
        self.generation_id: Optional[str] = fields.get("generation_id")
        self.etag: Optional[str] = fields.get("etag")
        self.status: Optional[str] = fields.get("status")
        self.status_reason: Optional[str] = fields.get("status_reason")
        self.status_updated_time: Optional[str] = fields.get("status_updated_time")
        self.connection_state: Optional[str] = fields.get("connection_state")
        self.connection_state_updated_time: Optional[str] = fields.get("connection_state_updated_time")
        self.last_activity_time: Optional[str] = fields.get("last_activity_time")
        self.cloud_to_device_message_count: Optional[int] = fields.get("cloud_to_device_message_count")
        self.authentication: Optional[AuthenticationMechanism] = fields.get("authentication")
        self.capabilities: Optional[DeviceCapabilities] = fields.get("capabilities")

    @classmethod
    def _from_hub(cls, doc: Dict[str, Any]) -> "Device":
        return cls(
            device_id=doc.get("deviceId"),
            generation_id=doc.get("generationId"),
            etag=doc.get("etag"),
            status=doc.get("status"),
            status_reason=doc.get("statusReason"),
            status_updated_time=doc.get("statusUpdatedTime"),
            connection_state=doc.get("connectionState"),
            connection_state_updated_time=doc.get("connectionStateUpdatedTime"),
            last_activity_time=doc.get("lastActivityTime"),
            cloud_to_device_message_count=doc.get("cloudToDeviceMessageCount"),
            authentication=_authentication(doc.get("authentication") or {}),
            capabilities=DeviceCapabilities(bool((doc.get("capabilities") or {}).get("iotEdge", False))),
        )


class Module:
    """A module identity of the registry."""

    def __init__(self, **fields: Any) -> None:
        self.device_id: Optional[str] = fields.get("device_id")
        self.module_id: Optional[str] = fields.get("module_id")
        self.managed_by: Optional[str] = fields.get("managed_by")
        self.generation_id: Optional[str] = fields.get("generation_id")
        self.etag: Optional[str] = fields.get("etag")
        self.connection_state: Optional[str] = fields.get("connection_state")
        self.authentication: Optional[AuthenticationMechanism] = fields.get("authentication")

    @classmethod
    def _from_hub(cls, doc: Dict[str, Any]) -> "Module":
        return cls(
            device_id=doc.get("deviceId"),
            module_id=doc.get("moduleId"),
            managed_by=doc.get("managedBy"),
            generation_id=doc.get("generationId"),
            etag=doc.get("etag"),
            connection_state=doc.get("connectionState"),
            authentication=_authentication(doc.get("authentication") or {}),
        )


def _authentication(auth: Dict[str, Any]) -> AuthenticationMechanism:
    keys = auth.get("symmetricKey")
    thumbs = auth.get("x509Thumbprint")
    return AuthenticationMechanism(
        type=auth.get("type"),
        symmetric_key=SymmetricKey(keys.get("primaryKey"), keys.get("secondaryKey")) if keys else None,
        x509_thumbprint=X509Thumbprint(thumbs.get("primaryThumbprint"), thumbs.get("secondaryThumbprint"))
        if thumbs
        else None,
    )


class TwinProperties:
    """A twin's desired and reported properties (dicts, with ``$version`` and ``$metadata``)."""

    def __init__(self, desired: Optional[Dict[str, Any]] = None, reported: Optional[Dict[str, Any]] = None) -> None:
        self.desired = desired
        self.reported = reported


class Twin:
    """A device twin; for ``update_twin`` set ``tags`` and/or ``properties.desired``."""

    def __init__(
        self,
        tags: Optional[Dict[str, Any]] = None,
        properties: Optional[TwinProperties] = None,
        etag: Optional[str] = None,
        device_id: Optional[str] = None,
        module_id: Optional[str] = None,
        version: Optional[int] = None,
        status: Optional[str] = None,
        connection_state: Optional[str] = None,
        model_id: Optional[str] = None,
    ) -> None:
        self.tags = tags
        self.properties = properties
        self.etag = etag
        self.device_id = device_id
        self.module_id = module_id
        self.version = version
        self.status = status
        self.connection_state = connection_state
        self.model_id = model_id

    @classmethod
    def _from_hub(cls, doc: Dict[str, Any]) -> "Twin":
        properties = doc.get("properties") or {}
        return cls(
            tags=doc.get("tags"),
            properties=TwinProperties(properties.get("desired"), properties.get("reported")),
            etag=doc.get("etag"),
            device_id=doc.get("deviceId"),
            module_id=doc.get("moduleId"),
            version=doc.get("version"),
            status=doc.get("status"),
            connection_state=doc.get("connectionState"),
            model_id=doc.get("modelId"),
        )

    def _to_patch(self) -> Dict[str, Any]:
        patch: Dict[str, Any] = {}
        if self.tags is not None:
            patch["tags"] = self.tags
        if self.properties is not None and self.properties.desired is not None:
            patch["properties"] = {"desired": self.properties.desired}
        return patch


class CloudToDeviceMethod:
    """A direct method call to make (``payload`` must be JSON-serializable)."""

    def __init__(
        self,
        method_name: str,
        payload: Any = None,
        response_timeout_in_seconds: Optional[int] = None,
        connect_timeout_in_seconds: Optional[int] = None,
    ) -> None:
        self.method_name = method_name
        self.payload = payload
        self.response_timeout_in_seconds = response_timeout_in_seconds
        self.connect_timeout_in_seconds = connect_timeout_in_seconds


class CloudToDeviceMethodResult:
    """A device's answer to a direct method call."""

    def __init__(self, status: int, payload: Any = None) -> None:
        self.status = status
        self.payload = payload


__all__ = [
    "AuthenticationMechanism",
    "CloudToDeviceMethod",
    "CloudToDeviceMethodResult",
    "Device",
    "DeviceCapabilities",
    "Module",
    "SymmetricKey",
    "Twin",
    "TwinProperties",
    "X509Thumbprint",
]
