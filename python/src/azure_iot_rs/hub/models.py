"""The models of ``azure.iot.hub.models``: the same class names, attribute names and keyword
arguments, read from and written to the hub's JSON.

Each model declares ``_fields``: its Python attribute names in order, each with the hub's JSON
key and a type (``str``, ``int``, ``bool``, ``object``, ``datetime``, a model class, a list
``[T]`` or a dict ``{T}`` of one). ``_Model`` does the rest: keyword (or positional)
construction, ``serialize()`` (the JSON shape, camelCase keys), ``as_dict()`` (attribute
names), equality, and ``_from_hub`` for the hub's answers. Dates are ``datetime`` objects, as
msrest gives them."""

import datetime as _dt
import re
from typing import Any, ClassVar, Dict, List, Optional, Tuple, Union

#: A field type: a name ("str", "datetime", ...), a model class, or a list / dict of one.
_Type = Union[str, type, Tuple[str, Any]]


def _parse_datetime(text: Any) -> Any:
    """An ISO 8601 time as the hub writes it (``Z``, up to 7 fraction digits) as an aware
    ``datetime``; anything that does not parse is kept as it is."""
    if not isinstance(text, str):
        return text
    m = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?$", text)
    if not m:
        return text
    fraction = (m.group(2) or "").ljust(6, "0")[:6]
    zone = m.group(3) or "Z"
    zone = "+00:00" if zone == "Z" else zone
    try:
        return _dt.datetime.fromisoformat(f"{m.group(1)}.{fraction}{zone}")
    except ValueError:
        return text


def _format_datetime(value: _dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _read(kind: _Type, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(kind, tuple):
        container, inner = kind
        if container == "list":
            return [_read(inner, v) for v in value] if isinstance(value, list) else value
        return {k: _read(inner, v) for k, v in value.items()} if isinstance(value, dict) else value
    if isinstance(kind, type) and issubclass(kind, _Model):
        return kind._from_hub(value) if isinstance(value, dict) else value
    if kind == "datetime":
        return _parse_datetime(value)
    return value


def _write(kind: _Type, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, _Model):
        return value.serialize()
    if isinstance(value, _dt.datetime):
        return _format_datetime(value)
    if isinstance(kind, tuple):
        container, inner = kind
        if container == "list" and isinstance(value, (list, tuple)):
            return [_write(inner, v) for v in value]
        if container == "dict" and isinstance(value, dict):
            return {k: _write(inner, v) for k, v in value.items()}
    return value


class _Model:
    """The base of the models: attributes declared in ``_fields``."""

    #: (attribute, JSON key, type), in the official constructor's order.
    _fields: ClassVar[List[Tuple[str, str, _Type]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = [name for name, _, _ in self._fields]
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional arguments")
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise TypeError(f"{type(self).__name__} got an unexpected keyword argument {key!r}")
            if key in values:
                raise TypeError(f"{type(self).__name__} got multiple values for argument {key!r}")
            values[key] = value
        for name in names:
            setattr(self, name, values.get(name))

    @classmethod
    def _from_hub(cls, doc: Dict[str, Any]) -> Any:
        """The model from the hub's JSON (unknown keys are ignored, as msrest does)."""
        model = cls()
        for name, key, kind in cls._fields:
            setattr(model, name, _read(kind, doc.get(key)))
        return model

    def serialize(self, keep_readonly: bool = False) -> Dict[str, Any]:
        """The model as the hub's JSON (camelCase keys; unset attributes left out)."""
        out: Dict[str, Any] = {}
        for name, key, kind in self._fields:
            value = _write(kind, getattr(self, name, None))
            if value is not None:
                out[key] = value
        return out

    def as_dict(self) -> Dict[str, Any]:
        """The model as a dict of its attribute names (unset attributes left out)."""
        out: Dict[str, Any] = {}
        for name, _, _ in self._fields:
            value = getattr(self, name, None)
            if isinstance(value, _Model):
                value = value.as_dict()
            elif isinstance(value, list):
                value = [v.as_dict() if isinstance(v, _Model) else v for v in value]
            if value is not None:
                out[name] = value
        return out

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.as_dict()!r})"


def _list(kind: _Type) -> Tuple[str, _Type]:
    return ("list", kind)


def _dict(kind: _Type) -> Tuple[str, _Type]:
    return ("dict", kind)


class SymmetricKey(_Model):
    """A pair of shared access keys (base64)."""

    _fields = [("primary_key", "primaryKey", "str"), ("secondary_key", "secondaryKey", "str")]
    primary_key: Optional[str]
    secondary_key: Optional[str]

    def __repr__(self) -> str:  # keys are secrets: never shown
        return "SymmetricKey(primary_key=..., secondary_key=...)"


class X509Thumbprint(_Model):
    """Thumbprints of a self-signed certificate."""

    _fields = [
        ("primary_thumbprint", "primaryThumbprint", "str"),
        ("secondary_thumbprint", "secondaryThumbprint", "str"),
    ]
    primary_thumbprint: Optional[str]
    secondary_thumbprint: Optional[str]


class AuthenticationMechanism(_Model):
    """How an identity authenticates: ``type`` is sas, selfSigned, certificateAuthority or none."""

    _fields = [
        ("symmetric_key", "symmetricKey", SymmetricKey),
        ("x509_thumbprint", "x509Thumbprint", X509Thumbprint),
        ("type", "type", "str"),
    ]
    symmetric_key: Optional[SymmetricKey]
    x509_thumbprint: Optional[X509Thumbprint]
    type: Optional[str]

    def __repr__(self) -> str:  # the keys stay hidden
        return f"AuthenticationMechanism(type={self.type!r}, symmetric_key={self.symmetric_key!r})"


class DeviceCapabilities(_Model):
    """What a device can do."""

    _fields = [("iot_edge", "iotEdge", "bool")]
    iot_edge: Optional[bool]


class Device(_Model):
    """A device identity of the registry."""

    _fields = [
        ("device_id", "deviceId", "str"),
        ("generation_id", "generationId", "str"),
        ("etag", "etag", "str"),
        ("connection_state", "connectionState", "str"),
        ("status", "status", "str"),
        ("status_reason", "statusReason", "str"),
        ("connection_state_updated_time", "connectionStateUpdatedTime", "datetime"),
        ("status_updated_time", "statusUpdatedTime", "datetime"),
        ("last_activity_time", "lastActivityTime", "datetime"),
        ("cloud_to_device_message_count", "cloudToDeviceMessageCount", "int"),
        ("authentication", "authentication", AuthenticationMechanism),
        ("capabilities", "capabilities", DeviceCapabilities),
        ("device_scope", "deviceScope", "str"),
        ("parent_scopes", "parentScopes", _list("str")),
    ]
    device_id: Optional[str]
    generation_id: Optional[str]
    etag: Optional[str]
    connection_state: Optional[str]
    status: Optional[str]
    status_reason: Optional[str]
    connection_state_updated_time: Any
    status_updated_time: Any
    last_activity_time: Any
    cloud_to_device_message_count: Optional[int]
    authentication: Optional[AuthenticationMechanism]
    capabilities: Optional[DeviceCapabilities]
    device_scope: Optional[str]
    parent_scopes: Optional[List[str]]


class Module(_Model):
    """A module identity of the registry."""

    _fields = [
        ("module_id", "moduleId", "str"),
        ("managed_by", "managedBy", "str"),
        ("device_id", "deviceId", "str"),
        ("generation_id", "generationId", "str"),
        ("etag", "etag", "str"),
        ("connection_state", "connectionState", "str"),
        ("connection_state_updated_time", "connectionStateUpdatedTime", "datetime"),
        ("last_activity_time", "lastActivityTime", "datetime"),
        ("cloud_to_device_message_count", "cloudToDeviceMessageCount", "int"),
        ("authentication", "authentication", AuthenticationMechanism),
    ]
    module_id: Optional[str]
    managed_by: Optional[str]
    device_id: Optional[str]
    generation_id: Optional[str]
    etag: Optional[str]
    connection_state: Optional[str]
    connection_state_updated_time: Any
    last_activity_time: Any
    cloud_to_device_message_count: Optional[int]
    authentication: Optional[AuthenticationMechanism]


class TwinProperties(_Model):
    """A twin's desired and reported properties (dicts, with ``$version`` and ``$metadata``)."""

    _fields = [("desired", "desired", _dict("object")), ("reported", "reported", _dict("object"))]
    desired: Optional[Dict[str, Any]]
    reported: Optional[Dict[str, Any]]


class PropertyContainer(TwinProperties):
    """Desired and reported properties of an ``ExportImportDevice``."""


class Twin(_Model):
    """A device or module twin; for updates set ``tags`` and/or ``properties.desired``."""

    _fields = [
        ("device_id", "deviceId", "str"),
        ("module_id", "moduleId", "str"),
        ("tags", "tags", _dict("object")),
        ("properties", "properties", TwinProperties),
        ("etag", "etag", "str"),
        ("version", "version", "int"),
        ("device_etag", "deviceEtag", "str"),
        ("status", "status", "str"),
        ("status_reason", "statusReason", "str"),
        ("status_update_time", "statusUpdateTime", "datetime"),
        ("connection_state", "connectionState", "str"),
        ("last_activity_time", "lastActivityTime", "datetime"),
        ("cloud_to_device_message_count", "cloudToDeviceMessageCount", "int"),
        ("authentication_type", "authenticationType", "str"),
        ("x509_thumbprint", "x509Thumbprint", X509Thumbprint),
        ("capabilities", "capabilities", DeviceCapabilities),
        ("device_scope", "deviceScope", "str"),
        ("parent_scopes", "parentScopes", _list("str")),
        ("model_id", "modelId", "str"),
    ]
    device_id: Optional[str]
    module_id: Optional[str]
    tags: Optional[Dict[str, Any]]
    properties: Optional[TwinProperties]
    etag: Optional[str]
    version: Optional[int]
    device_etag: Optional[str]
    status: Optional[str]
    status_reason: Optional[str]
    status_update_time: Any
    connection_state: Optional[str]
    last_activity_time: Any
    cloud_to_device_message_count: Optional[int]
    authentication_type: Optional[str]
    x509_thumbprint: Optional[X509Thumbprint]
    capabilities: Optional[DeviceCapabilities]
    device_scope: Optional[str]
    parent_scopes: Optional[List[str]]
    model_id: Optional[str]

    def _to_patch(self) -> Dict[str, Any]:
        """The part of the twin an update or replace sends: tags and desired properties."""
        patch: Dict[str, Any] = {}
        if self.tags is not None:
            patch["tags"] = self.tags
        if self.properties is not None and self.properties.desired is not None:
            patch["properties"] = {"desired": self.properties.desired}
        return patch


class CloudToDeviceMethod(_Model):
    """A direct method call to make (``payload`` must be JSON-serializable)."""

    _fields = [
        ("method_name", "methodName", "str"),
        ("payload", "payload", "object"),
        ("response_timeout_in_seconds", "responseTimeoutInSeconds", "int"),
        ("connect_timeout_in_seconds", "connectTimeoutInSeconds", "int"),
    ]
    method_name: Optional[str]
    payload: Any
    response_timeout_in_seconds: Optional[int]
    connect_timeout_in_seconds: Optional[int]


class CloudToDeviceMethodResult(_Model):
    """A device's answer to a direct method call."""

    _fields = [("status", "status", "int"), ("payload", "payload", "object")]
    status: Optional[int]
    payload: Any


class ExportImportDevice(_Model):
    """One entry of ``bulk_create_or_update_devices``: ``id``, ``import_mode`` (create, update,
    updateIfMatchETag, delete, deleteIfMatchETag) and the identity's settings."""

    _fields = [
        ("id", "id", "str"),
        ("module_id", "moduleId", "str"),
        ("e_tag", "eTag", "str"),
        ("import_mode", "importMode", "str"),
        ("status", "status", "str"),
        ("status_reason", "statusReason", "str"),
        ("authentication", "authentication", AuthenticationMechanism),
        ("twin_etag", "twinETag", "str"),
        ("tags", "tags", _dict("object")),
        ("properties", "properties", PropertyContainer),
        ("capabilities", "capabilities", DeviceCapabilities),
        ("device_scope", "deviceScope", "str"),
        ("parent_scopes", "parentScopes", _list("str")),
    ]
    id: Optional[str]
    module_id: Optional[str]
    e_tag: Optional[str]
    import_mode: Optional[str]
    status: Optional[str]
    status_reason: Optional[str]
    authentication: Optional[AuthenticationMechanism]
    twin_etag: Optional[str]
    tags: Optional[Dict[str, Any]]
    properties: Optional[PropertyContainer]
    capabilities: Optional[DeviceCapabilities]
    device_scope: Optional[str]
    parent_scopes: Optional[List[str]]


class DeviceRegistryOperationError(_Model):
    """A bulk entry the hub refused."""

    _fields = [
        ("device_id", "deviceId", "str"),
        ("error_code", "errorCode", "str"),
        ("error_status", "errorStatus", "str"),
        ("module_id", "moduleId", "str"),
        ("operation", "operation", "str"),
    ]
    device_id: Optional[str]
    error_code: Optional[str]
    error_status: Optional[str]
    module_id: Optional[str]
    operation: Optional[str]


class DeviceRegistryOperationWarning(_Model):
    """A warning about a bulk entry."""

    _fields = [
        ("device_id", "deviceId", "str"),
        ("warning_code", "warningCode", "str"),
        ("warning_status", "warningStatus", "str"),
    ]
    device_id: Optional[str]
    warning_code: Optional[str]
    warning_status: Optional[str]


class BulkRegistryOperationResult(_Model):
    """The outcome of a bulk registry operation."""

    _fields = [
        ("is_successful", "isSuccessful", "bool"),
        ("errors", "errors", _list(DeviceRegistryOperationError)),
        ("warnings", "warnings", _list(DeviceRegistryOperationWarning)),
    ]
    is_successful: Optional[bool]
    errors: Optional[List[DeviceRegistryOperationError]]
    warnings: Optional[List[DeviceRegistryOperationWarning]]


class QuerySpecification(_Model):
    """An IoT Hub query (``SELECT * FROM devices ...``)."""

    _fields = [("query", "query", "str")]
    query: Optional[str]


class QueryResult(_Model):
    """One page of a query: ``type`` (twin, deviceJob, jobResponse, raw, ...), ``items`` and the
    ``continuation_token`` of the next page (None after the last)."""

    _fields = [
        ("type", "type", "str"),
        ("items", "items", _list("object")),
        ("continuation_token", "continuationToken", "str"),
    ]
    type: Optional[str]
    items: Optional[List[Any]]
    continuation_token: Optional[str]


class RegistryStatistics(_Model):
    """The registry's device counts."""

    _fields = [
        ("total_device_count", "totalDeviceCount", "int"),
        ("enabled_device_count", "enabledDeviceCount", "int"),
        ("disabled_device_count", "disabledDeviceCount", "int"),
    ]
    total_device_count: Optional[int]
    enabled_device_count: Optional[int]
    disabled_device_count: Optional[int]


class ServiceStatistics(_Model):
    """The service's statistics."""

    _fields = [("connected_device_count", "connectedDeviceCount", "int")]
    connected_device_count: Optional[int]


class PurgeMessageQueueResult(_Model):
    """The outcome of purging a device's cloud-to-device queue."""

    _fields = [
        ("total_messages_purged", "totalMessagesPurged", "int"),
        ("device_id", "deviceId", "str"),
        ("module_id", "moduleId", "str"),
    ]
    total_messages_purged: Optional[int]
    device_id: Optional[str]
    module_id: Optional[str]


class ManagedIdentity(_Model):
    """The managed identity an import/export job reaches storage with."""

    _fields = [("user_assigned_identity", "userAssignedIdentity", "str")]
    user_assigned_identity: Optional[str]


class JobProperties(_Model):
    """An import or export job (``type`` export or import) and, as the hub answers, its state."""

    _fields = [
        ("job_id", "jobId", "str"),
        ("start_time_utc", "startTimeUtc", "datetime"),
        ("end_time_utc", "endTimeUtc", "datetime"),
        ("type", "type", "str"),
        ("status", "status", "str"),
        ("progress", "progress", "int"),
        ("input_blob_container_uri", "inputBlobContainerUri", "str"),
        ("input_blob_name", "inputBlobName", "str"),
        ("output_blob_container_uri", "outputBlobContainerUri", "str"),
        ("output_blob_name", "outputBlobName", "str"),
        ("exclude_keys_in_export", "excludeKeysInExport", "bool"),
        ("storage_authentication_type", "storageAuthenticationType", "str"),
        ("identity", "identity", ManagedIdentity),
        ("failure_reason", "failureReason", "str"),
        ("include_configurations", "includeConfigurations", "bool"),
        ("configurations_blob_name", "configurationsBlobName", "str"),
    ]
    job_id: Optional[str]
    start_time_utc: Any
    end_time_utc: Any
    type: Optional[str]
    status: Optional[str]
    progress: Optional[int]
    input_blob_container_uri: Optional[str]
    input_blob_name: Optional[str]
    output_blob_container_uri: Optional[str]
    output_blob_name: Optional[str]
    exclude_keys_in_export: Optional[bool]
    storage_authentication_type: Optional[str]
    identity: Optional[ManagedIdentity]
    failure_reason: Optional[str]
    include_configurations: Optional[bool]
    configurations_blob_name: Optional[str]


class JobRequest(_Model):
    """A job to schedule: ``type`` scheduleUpdateTwin (with ``update_twin``) or
    scheduleDeviceMethod (with ``cloud_to_device_method``) over ``query_condition``."""

    _fields = [
        ("job_id", "jobId", "str"),
        ("type", "type", "str"),
        ("cloud_to_device_method", "cloudToDeviceMethod", CloudToDeviceMethod),
        ("update_twin", "updateTwin", Twin),
        ("query_condition", "queryCondition", "str"),
        ("start_time", "startTime", "datetime"),
        ("max_execution_time_in_seconds", "maxExecutionTimeInSeconds", "int"),
    ]
    job_id: Optional[str]
    type: Optional[str]
    cloud_to_device_method: Optional[CloudToDeviceMethod]
    update_twin: Optional[Twin]
    query_condition: Optional[str]
    start_time: Any
    max_execution_time_in_seconds: Optional[int]


class DeviceJobStatistics(_Model):
    """How a job fared over its devices."""

    _fields = [
        ("device_count", "deviceCount", "int"),
        ("failed_count", "failedCount", "int"),
        ("succeeded_count", "succeededCount", "int"),
        ("running_count", "runningCount", "int"),
        ("pending_count", "pendingCount", "int"),
    ]
    device_count: Optional[int]
    failed_count: Optional[int]
    succeeded_count: Optional[int]
    running_count: Optional[int]
    pending_count: Optional[int]


class JobResponse(_Model):
    """A scheduled job as the hub reports it."""

    _fields = [
        ("job_id", "jobId", "str"),
        ("query_condition", "queryCondition", "str"),
        ("created_time", "createdTime", "datetime"),
        ("start_time", "startTime", "datetime"),
        ("end_time", "endTime", "datetime"),
        ("max_execution_time_in_seconds", "maxExecutionTimeInSeconds", "int"),
        ("type", "type", "str"),
        ("cloud_to_device_method", "cloudToDeviceMethod", CloudToDeviceMethod),
        ("update_twin", "updateTwin", Twin),
        ("status", "status", "str"),
        ("failure_reason", "failureReason", "str"),
        ("status_message", "statusMessage", "str"),
        ("device_job_statistics", "deviceJobStatistics", DeviceJobStatistics),
    ]
    job_id: Optional[str]
    query_condition: Optional[str]
    created_time: Any
    start_time: Any
    end_time: Any
    max_execution_time_in_seconds: Optional[int]
    type: Optional[str]
    cloud_to_device_method: Optional[CloudToDeviceMethod]
    update_twin: Optional[Twin]
    status: Optional[str]
    failure_reason: Optional[str]
    status_message: Optional[str]
    device_job_statistics: Optional[DeviceJobStatistics]


class ConfigurationContent(_Model):
    """What a configuration sets: ``device_content`` (``properties.desired.*`` paths) or, for
    IoT Edge, ``modules_content``; ``module_content`` for module twins."""

    _fields = [
        ("device_content", "deviceContent", _dict("object")),
        ("modules_content", "modulesContent", _dict("object")),
        ("module_content", "moduleContent", _dict("object")),
    ]
    device_content: Optional[Dict[str, Any]]
    modules_content: Optional[Dict[str, Any]]
    module_content: Optional[Dict[str, Any]]


class ConfigurationMetrics(_Model):
    """Metric ``queries`` by name and, as the hub answers, their ``results`` (device counts)."""

    _fields = [("results", "results", _dict("int")), ("queries", "queries", _dict("str"))]
    results: Optional[Dict[str, int]]
    queries: Optional[Dict[str, str]]


class Configuration(_Model):
    """An automatic device management configuration."""

    _fields = [
        ("id", "id", "str"),
        ("schema_version", "schemaVersion", "str"),
        ("labels", "labels", _dict("str")),
        ("content", "content", ConfigurationContent),
        ("target_condition", "targetCondition", "str"),
        ("created_time_utc", "createdTimeUtc", "datetime"),
        ("last_updated_time_utc", "lastUpdatedTimeUtc", "datetime"),
        ("priority", "priority", "int"),
        ("system_metrics", "systemMetrics", ConfigurationMetrics),
        ("metrics", "metrics", ConfigurationMetrics),
        ("etag", "etag", "str"),
    ]
    id: Optional[str]
    schema_version: Optional[str]
    labels: Optional[Dict[str, str]]
    content: Optional[ConfigurationContent]
    target_condition: Optional[str]
    created_time_utc: Any
    last_updated_time_utc: Any
    priority: Optional[int]
    system_metrics: Optional[ConfigurationMetrics]
    metrics: Optional[ConfigurationMetrics]
    etag: Optional[str]


class ConfigurationQueriesTestInput(_Model):
    """A target condition and custom metric queries to have the hub check."""

    _fields = [
        ("target_condition", "targetCondition", "str"),
        ("custom_metric_queries", "customMetricQueries", _dict("str")),
    ]
    target_condition: Optional[str]
    custom_metric_queries: Optional[Dict[str, str]]


class ConfigurationQueriesTestResponse(_Model):
    """The hub's verdict on ``ConfigurationQueriesTestInput``: empty strings when all parse."""

    _fields = [
        ("target_condition_error", "targetConditionError", "str"),
        ("custom_metric_query_errors", "customMetricQueryErrors", _dict("str")),
    ]
    target_condition_error: Optional[str]
    custom_metric_query_errors: Optional[Dict[str, str]]


__all__ = [
    "AuthenticationMechanism",
    "BulkRegistryOperationResult",
    "CloudToDeviceMethod",
    "CloudToDeviceMethodResult",
    "Configuration",
    "ConfigurationContent",
    "ConfigurationMetrics",
    "ConfigurationQueriesTestInput",
    "ConfigurationQueriesTestResponse",
    "Device",
    "DeviceCapabilities",
    "DeviceJobStatistics",
    "DeviceRegistryOperationError",
    "DeviceRegistryOperationWarning",
    "ExportImportDevice",
    "JobProperties",
    "JobRequest",
    "JobResponse",
    "ManagedIdentity",
    "Module",
    "PropertyContainer",
    "PurgeMessageQueueResult",
    "QueryResult",
    "QuerySpecification",
    "RegistryStatistics",
    "ServiceStatistics",
    "SymmetricKey",
    "Twin",
    "TwinProperties",
    "X509Thumbprint",
]
