"""Service side (the API of ``azure.iot.hub``): ``IoTHubRegistryManager``,
``IoTHubJobManager`` and ``IoTHubConfigurationManager``."""

import json
import os
from typing import Any, Dict, List, Optional, Union

from .._native import NativeConfigurationManager, NativeJobManager, NativeRegistryManager
from ..models import _json_text
from .models import (
    AuthenticationMechanism,
    BulkRegistryOperationResult,
    CloudToDeviceMethod,
    CloudToDeviceMethodResult,
    Configuration,
    ConfigurationContent,
    ConfigurationQueriesTestInput,
    ConfigurationQueriesTestResponse,
    Device,
    DeviceCapabilities,
    ExportImportDevice,
    JobProperties,
    JobRequest,
    JobResponse,
    Module,
    QueryResult,
    QuerySpecification,
    RegistryStatistics,
    ServiceStatistics,
    SymmetricKey,
    Twin,
    X509Thumbprint,
)

_STATUSES = ("enabled", "disabled")


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
        ca = _manager_arguments(connection_string, server_verification_cert)
        self._native = NativeRegistryManager(connection_string, ca, https_port, amqp_port)

    @classmethod
    def from_connection_string(cls, connection_string: str, **kwargs: Any) -> "IoTHubRegistryManager":
        """A registry manager from a service connection string."""
        return cls(connection_string, **kwargs)

    # ---- devices ------------------------------------------------------------------------

    def create_device_with_sas(
        self,
        device_id: str,
        primary_key: str,
        secondary_key: str,
        status: str,
        iot_edge: bool = False,
        status_reason: Optional[str] = None,
        device_scope: Optional[str] = None,
        parent_scopes: Union[List[str], str, None] = None,
    ) -> Device:
        """Creates a device with keys (empty strings: the hub generates them)."""
        auth = AuthenticationMechanism(type="sas", symmetric_key=SymmetricKey(primary_key or "", secondary_key or ""))
        return self._put_device(device_id, None, auth, status, iot_edge, status_reason, device_scope, parent_scopes)

    def create_device_with_x509(
        self,
        device_id: str,
        primary_thumbprint: str,
        secondary_thumbprint: Optional[str],
        status: str,
        iot_edge: bool = False,
        status_reason: Optional[str] = None,
        device_scope: Optional[str] = None,
        parent_scopes: Union[List[str], str, None] = None,
    ) -> Device:
        """Creates a device authenticated by self-signed certificates of these SHA-1
        thumbprints (hex)."""
        auth = AuthenticationMechanism(
            type="selfSigned", x509_thumbprint=X509Thumbprint(primary_thumbprint, secondary_thumbprint or None)
        )
        return self._put_device(device_id, None, auth, status, iot_edge, status_reason, device_scope, parent_scopes)

    def create_device_with_certificate_authority(
        self,
        device_id: str,
        status: str,
        iot_edge: bool = False,
        status_reason: Optional[str] = None,
        device_scope: Optional[str] = None,
        parent_scopes: Union[List[str], str, None] = None,
    ) -> Device:
        """Creates a device authenticated by a certificate signed by a CA the hub knows."""
        auth = AuthenticationMechanism(type="certificateAuthority")
        return self._put_device(device_id, None, auth, status, iot_edge, status_reason, device_scope, parent_scopes)

    def update_device_with_sas(
        self,
        device_id: str,
        etag: Optional[str],
        primary_key: str,
        secondary_key: str,
        status: str,
        iot_edge: bool = False,
        status_reason: Optional[str] = None,
        device_scope: Optional[str] = None,
        parent_scopes: Union[List[str], str, None] = None,
    ) -> Device:
        """Replaces the device's settings with these keys, if its ETag is still ``etag``
        (None: whatever it is)."""
        auth = AuthenticationMechanism(type="sas", symmetric_key=SymmetricKey(primary_key or "", secondary_key or ""))
        return self._put_device(
            device_id, etag or "*", auth, status, iot_edge, status_reason, device_scope, parent_scopes
        )

    def update_device_with_x509(
        self,
        device_id: str,
        etag: Optional[str],
        primary_thumbprint: str,
        secondary_thumbprint: Optional[str],
        status: str,
        iot_edge: bool = False,
        status_reason: Optional[str] = None,
        device_scope: Optional[str] = None,
        parent_scopes: Union[List[str], str, None] = None,
    ) -> Device:
        """Replaces the device's settings with these thumbprints, if its ETag is still
        ``etag``."""
        auth = AuthenticationMechanism(
            type="selfSigned", x509_thumbprint=X509Thumbprint(primary_thumbprint, secondary_thumbprint or None)
        )
        return self._put_device(
            device_id, etag or "*", auth, status, iot_edge, status_reason, device_scope, parent_scopes
        )

    def update_device_with_certificate_authority(
        self,
        device_id: str,
        etag: Optional[str],
        status: str,
        iot_edge: bool = False,
        status_reason: Optional[str] = None,
        device_scope: Optional[str] = None,
        parent_scopes: Union[List[str], str, None] = None,
    ) -> Device:
        """Replaces the device's settings with CA authentication, if its ETag is still
        ``etag``."""
        auth = AuthenticationMechanism(type="certificateAuthority")
        return self._put_device(
            device_id, etag or "*", auth, status, iot_edge, status_reason, device_scope, parent_scopes
        )

    def _put_device(
        self,
        device_id: str,
        etag: Optional[str],
        authentication: AuthenticationMechanism,
        status: str,
        iot_edge: bool,
        status_reason: Optional[str],
        device_scope: Optional[str],
        parent_scopes: Union[List[str], str, None],
    ) -> Device:
        if not isinstance(device_id, str):
            raise TypeError("device_id must be str")
        if status not in _STATUSES:
            raise ValueError(f"status: {status!r} is not one of enabled, disabled")
        if isinstance(parent_scopes, str):
            parent_scopes = [parent_scopes]
        device = Device(
            device_id=device_id,
            status=status,
            status_reason=status_reason,
            authentication=authentication,
            capabilities=DeviceCapabilities(iot_edge=bool(iot_edge)),
            device_scope=device_scope,
            parent_scopes=parent_scopes,
        )
        doc = self._native.put_device(json.dumps(device.serialize()), etag is None, etag)
        return Device._from_hub(json.loads(doc))

    def get_device(self, device_id: str) -> Device:
        """The device."""
        return Device._from_hub(json.loads(self._native.get_device(device_id)))

    def get_devices(self, max_number_of_devices: Optional[int] = None) -> List[Device]:
        """Up to ``max_number_of_devices`` device identities (outside 1–1000: 1000, as the hub
        reads it)."""
        count = max_number_of_devices if isinstance(max_number_of_devices, int) else 1000
        count = count if 1 <= count <= 1000 else 1000
        return [Device._from_hub(d) for d in json.loads(self._native.get_devices(count))]

    def delete_device(self, device_id: str, etag: Optional[str] = None) -> None:
        """Deletes the device (only if its ETag is still ``etag``, when given)."""
        self._native.delete_device(device_id, etag)

    # ---- modules ------------------------------------------------------------------------

    def create_module_with_sas(
        self, device_id: str, module_id: str, managed_by: Optional[str], primary_key: str, secondary_key: str
    ) -> Module:
        """Creates a module with keys (empty strings: the hub generates them)."""
        auth = AuthenticationMechanism(type="sas", symmetric_key=SymmetricKey(primary_key or "", secondary_key or ""))
        return self._put_module(device_id, module_id, managed_by, None, auth)

    def create_module_with_x509(
        self,
        device_id: str,
        module_id: str,
        managed_by: Optional[str],
        primary_thumbprint: str,
        secondary_thumbprint: Optional[str],
    ) -> Module:
        """Creates a module authenticated by self-signed certificates of these thumbprints."""
        auth = AuthenticationMechanism(
            type="selfSigned", x509_thumbprint=X509Thumbprint(primary_thumbprint, secondary_thumbprint or None)
        )
        return self._put_module(device_id, module_id, managed_by, None, auth)

    def create_module_with_certificate_authority(
        self, device_id: str, module_id: str, managed_by: Optional[str]
    ) -> Module:
        """Creates a module authenticated by a certificate signed by a CA the hub knows."""
        return self._put_module(device_id, module_id, managed_by, None, AuthenticationMechanism(type="certificateAuthority"))

    def update_module_with_sas(
        self,
        device_id: str,
        module_id: str,
        managed_by: Optional[str],
        etag: Optional[str],
        primary_key: str,
        secondary_key: str,
    ) -> Module:
        """Replaces the module's settings with these keys, if its ETag is still ``etag``."""
        auth = AuthenticationMechanism(type="sas", symmetric_key=SymmetricKey(primary_key or "", secondary_key or ""))
        return self._put_module(device_id, module_id, managed_by, etag or "*", auth)

    def update_module_with_x509(
        self,
        device_id: str,
        module_id: str,
        managed_by: Optional[str],
        etag: Optional[str],
        primary_thumbprint: str,
        secondary_thumbprint: Optional[str],
    ) -> Module:
        """Replaces the module's settings with these thumbprints, if its ETag is still
        ``etag``."""
        auth = AuthenticationMechanism(
            type="selfSigned", x509_thumbprint=X509Thumbprint(primary_thumbprint, secondary_thumbprint or None)
        )
        return self._put_module(device_id, module_id, managed_by, etag or "*", auth)

    def update_module_with_certificate_authority(
        self, device_id: str, module_id: str, managed_by: Optional[str], etag: Optional[str]
    ) -> Module:
        """Replaces the module's settings with CA authentication, if its ETag is still
        ``etag``."""
        auth = AuthenticationMechanism(type="certificateAuthority")
        return self._put_module(device_id, module_id, managed_by, etag or "*", auth)

    def _put_module(
        self,
        device_id: str,
        module_id: str,
        managed_by: Optional[str],
        etag: Optional[str],
        authentication: AuthenticationMechanism,
    ) -> Module:
        if not isinstance(device_id, str) or not isinstance(module_id, str):
            raise TypeError("device_id and module_id must be str")
        module = Module(device_id=device_id, module_id=module_id, managed_by=managed_by, authentication=authentication)
        doc = self._native.put_module(json.dumps(module.serialize()), etag is None, etag)
        return Module._from_hub(json.loads(doc))

    def get_module(self, device_id: str, module_id: str) -> Module:
        """The module."""
        return Module._from_hub(json.loads(self._native.get_module(device_id, module_id)))

    def get_modules(self, device_id: str) -> List[Module]:
        """The device's modules."""
        return [Module._from_hub(m) for m in json.loads(self._native.get_modules(device_id))]

    def delete_module(self, device_id: str, module_id: str, etag: Optional[str] = None) -> None:
        """Deletes the module (only if its ETag is still ``etag``, when given)."""
        self._native.delete_module(device_id, module_id, etag)

    # ---- registry-wide ------------------------------------------------------------------

    def get_service_statistics(self) -> ServiceStatistics:
        """The service's statistics (connected devices)."""
        return ServiceStatistics._from_hub(json.loads(self._native.get_service_statistics()))

    def get_device_registry_statistics(self) -> RegistryStatistics:
        """The registry's device counts."""
        return RegistryStatistics._from_hub(json.loads(self._native.get_device_registry_statistics()))

    def bulk_create_or_update_devices(self, devices: List[ExportImportDevice]) -> BulkRegistryOperationResult:
        """Creates, updates or deletes up to 100 devices in one operation; each entry's
        ``import_mode`` says which. Per-entry failures are in the result's ``errors``. This
        package sends the identity part of each entry (id, eTag, status, status reason,
        authentication, capabilities); module entries, twin parts and scopes raise
        ``ValueError``."""
        if not isinstance(devices, list):
            raise TypeError("devices must be a list of ExportImportDevice")
        entries = []
        for entry in devices:
            if not isinstance(entry, ExportImportDevice):
                raise TypeError("devices must be a list of ExportImportDevice")
            if entry.module_id or entry.tags is not None or entry.properties is not None or entry.twin_etag:
                raise ValueError("devices: module entries and twin parts (tags, properties, twin_etag) are not supported")
            if entry.device_scope or entry.parent_scopes:
                raise ValueError("devices: device_scope and parent_scopes are not supported in bulk entries")
            device = Device(
                device_id=entry.id,
                etag=entry.e_tag,
                status=entry.status,
                status_reason=entry.status_reason,
                authentication=entry.authentication,
                capabilities=entry.capabilities,
            )
            entries.append((str(entry.import_mode or "create"), json.dumps(device.serialize())))
        return BulkRegistryOperationResult._from_hub(json.loads(self._native.bulk(entries)))

    def query_iot_hub(
        self,
        query_specification: QuerySpecification,
        continuation_token: Optional[str] = None,
        max_item_count: Optional[int] = None,
    ) -> QueryResult:
        """One page of an IoT Hub query: ``items`` are ``Twin`` objects (as azure-iot-hub
        reads every item), ``type`` the hub's item type and ``continuation_token`` the next
        page's token (None after the last)."""
        if not isinstance(query_specification, QuerySpecification) or not isinstance(query_specification.query, str):
            raise TypeError("query_specification must be a QuerySpecification with a query")
        item_type, token, items = self._native.query(
            query_specification.query, continuation_token or None, int(max_item_count) if max_item_count else None
        )
        return QueryResult(
            type=item_type, items=[Twin._from_hub(i) if isinstance(i, dict) else i for i in json.loads(items)],
            continuation_token=token,
        )

    # ---- twins --------------------------------------------------------------------------

    def get_twin(self, device_id: str) -> Twin:
        """The device's twin."""
        return Twin._from_hub(json.loads(self._native.get_twin(device_id, None)))

    def update_twin(self, device_id: str, device_twin: Twin, etag: Optional[str] = None) -> Twin:
        """Merges ``device_twin``'s tags and desired properties into the twin."""
        return self._twin(device_id, None, device_twin, False, etag)

    def replace_twin(self, device_id: str, device_twin: Twin, etag: Optional[str] = None) -> Twin:
        """Replaces the twin's tags and desired properties with ``device_twin``'s."""
        return self._twin(device_id, None, device_twin, True, etag)

    def get_module_twin(self, device_id: str, module_id: str) -> Twin:
        """The module's twin."""
        return Twin._from_hub(json.loads(self._native.get_twin(device_id, module_id)))

    def update_module_twin(self, device_id: str, module_id: str, module_twin: Twin, etag: Optional[str] = None) -> Twin:
        """Merges ``module_twin``'s tags and desired properties into the module's twin."""
        return self._twin(device_id, module_id, module_twin, False, etag)

    def replace_module_twin(self, device_id: str, module_id: str, module_twin: Twin, etag: Optional[str] = None) -> Twin:
        """Replaces the module twin's tags and desired properties with ``module_twin``'s."""
        return self._twin(device_id, module_id, module_twin, True, etag)

    def _twin(self, device_id: str, module_id: Optional[str], twin: Twin, replace: bool, etag: Optional[str]) -> Twin:
        if not isinstance(twin, Twin):
            raise TypeError("the twin must be a Twin")
        doc = self._native.update_twin(device_id, module_id, _json_text("twin", twin._to_patch()), replace, etag)
        return Twin._from_hub(json.loads(doc))

    # ---- direct methods and messages ----------------------------------------------------

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
        if not isinstance(request.method_name, str):
            raise TypeError("direct_method_request.method_name must be str")
        status, payload = self._native.invoke_method(
            device_id,
            module_id,
            request.method_name,
            _json_text("payload", request.payload),
            request.response_timeout_in_seconds,
            request.connect_timeout_in_seconds,
        )
        return CloudToDeviceMethodResult(status=status, payload=json.loads(payload))

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



def _manager_arguments(
    connection_string: str, server_verification_cert: Optional[str]
) -> Optional[str]:
    """Checks the connection string's type; the CA to trust (see ``IoTHubRegistryManager``)."""
    if not isinstance(connection_string, str):
        raise TypeError("connection_string must be str")
    return server_verification_cert if server_verification_cert is not None else _ca_bundle_from_environment()


class IoTHubJobManager:
    """Import/export jobs and scheduled jobs (twin updates and direct methods over a query's
    devices). Takes the registry manager's own keywords ``server_verification_cert`` and
    ``https_port``, trusts ``REQUESTS_CA_BUNDLE`` as it does, and raises
    ``HttpOperationError`` for what the hub refuses."""

    def __init__(
        self, connection_string: str, server_verification_cert: Optional[str] = None, https_port: Optional[int] = None
    ) -> None:
        ca = _manager_arguments(connection_string, server_verification_cert)
        self._native = NativeJobManager(connection_string, ca, https_port)

    @classmethod
    def from_connection_string(cls, connection_string: str, **kwargs: Any) -> "IoTHubJobManager":
        """A job manager from a service connection string."""
        return cls(connection_string, **kwargs)

    def create_import_export_job(self, job_properties: JobProperties) -> JobProperties:
        """Starts an import or export job (``type`` "import" or "export") and returns it."""
        if not isinstance(job_properties, JobProperties):
            raise TypeError("job_properties must be a JobProperties")
        doc = self._native.create_import_export_job(json.dumps(job_properties.serialize()))
        return JobProperties._from_hub(json.loads(doc))

    def get_import_export_jobs(self) -> List[JobProperties]:
        """The hub's recent import/export jobs."""
        return [JobProperties._from_hub(j) for j in json.loads(self._native.get_import_export_jobs())]

    def get_import_export_job(self, job_id: str) -> JobProperties:
        """One import/export job."""
        return JobProperties._from_hub(json.loads(self._native.get_import_export_job(job_id)))

    def cancel_import_export_job(self, job_id: str) -> None:
        """Cancels an import/export job."""
        self._native.cancel_import_export_job(job_id)

    def create_scheduled_job(self, job_id: str, job_request: JobRequest) -> JobResponse:
        """Schedules ``job_request`` under ``job_id`` and returns the job as the hub took it."""
        if not isinstance(job_request, JobRequest):
            raise TypeError("job_request must be a JobRequest")
        if not isinstance(job_id, str):
            raise TypeError("job_id must be str")
        body = job_request.serialize()
        body["jobId"] = job_id
        return JobResponse._from_hub(json.loads(self._native.create_scheduled_job(json.dumps(body))))

    def get_scheduled_job(self, job_id: str) -> JobResponse:
        """One scheduled job, with its status and device statistics."""
        return JobResponse._from_hub(json.loads(self._native.get_scheduled_job(job_id)))

    def cancel_scheduled_job(self, job_id: str) -> JobResponse:
        """Cancels a scheduled job; returns it."""
        return JobResponse._from_hub(json.loads(self._native.cancel_scheduled_job(job_id)))

    def query_scheduled_jobs(self, job_type: Optional[str], job_status: Optional[str]) -> QueryResult:
        """The first page of jobs of ``job_type`` and/or ``job_status`` (None: any); ``items``
        are the hub's job records as dicts, as azure-iot-hub returns them."""
        item_type, token, items = self._native.query_scheduled_jobs(job_type or None, job_status or None)
        return QueryResult(type=item_type, items=json.loads(items), continuation_token=token)


class IoTHubConfigurationManager:
    """Configurations (automatic device management). Takes the registry manager's own
    keywords ``server_verification_cert`` and ``https_port``, trusts ``REQUESTS_CA_BUNDLE`` as
    it does, and raises ``HttpOperationError`` for what the hub refuses; a configuration that
    breaks the hub's rules before it is sent (id characters, several content kinds, more than
    five custom metrics) is a ``ValueError``."""

    def __init__(
        self, connection_string: str, server_verification_cert: Optional[str] = None, https_port: Optional[int] = None
    ) -> None:
        ca = _manager_arguments(connection_string, server_verification_cert)
        self._native = NativeConfigurationManager(connection_string, ca, https_port)

    @classmethod
    def from_connection_string(cls, connection_string: str, **kwargs: Any) -> "IoTHubConfigurationManager":
        """A configuration manager from a service connection string."""
        return cls(connection_string, **kwargs)

    def get_configuration(self, configuration_id: str) -> Configuration:
        """One configuration, with its current metrics."""
        return Configuration._from_hub(json.loads(self._native.get_configuration(configuration_id)))

    def create_configuration(self, configuration: Configuration) -> Configuration:
        """Creates ``configuration`` (its ``id``, content, target condition, priority, labels,
        metrics) and returns it as the hub stored it."""
        doc = self._native.create_configuration(_configuration_json(configuration))
        return Configuration._from_hub(json.loads(doc))

    def update_configuration(self, configuration: Configuration, etag: Optional[str]) -> Configuration:
        """Updates ``configuration`` if its ETag is still ``etag`` ("*" or None: any)."""
        doc = self._native.update_configuration(_configuration_json(configuration), etag or None)
        return Configuration._from_hub(json.loads(doc))

    def delete_configuration(self, configuration_id: str, etag: Optional[str] = None) -> None:
        """Deletes a configuration (only if its ETag is still ``etag``, when given)."""
        self._native.delete_configuration(configuration_id, etag or None)

    def get_configurations(self, max_count: Optional[int] = None) -> List[Configuration]:
        """Up to ``max_count`` configurations (default: 100, the most the hub lists; the hub
        refuses more with 400)."""
        count = 100 if max_count is None else int(max_count)
        if count < 0:
            raise ValueError("max_count must not be negative")
        return [Configuration._from_hub(c) for c in json.loads(self._native.get_configurations(count))]

    def test_configuration_queries(
        self, configuration_queries_test_input: ConfigurationQueriesTestInput
    ) -> ConfigurationQueriesTestResponse:
        """Has the hub check a target condition and custom metric queries."""
        if not isinstance(configuration_queries_test_input, ConfigurationQueriesTestInput):
            raise TypeError("configuration_queries_test_input must be a ConfigurationQueriesTestInput")
        doc = self._native.test_configuration_queries(json.dumps(configuration_queries_test_input.serialize()))
        return ConfigurationQueriesTestResponse._from_hub(json.loads(doc))

    def apply_configuration_on_edge_device(self, device_id: str, configuration_content: ConfigurationContent) -> None:
        """Applies IoT Edge content (``modules_content``) to one device."""
        if not isinstance(configuration_content, ConfigurationContent):
            raise TypeError("configuration_content must be a ConfigurationContent")
        self._native.apply_configuration_on_edge_device(device_id, json.dumps(configuration_content.serialize()))


def _configuration_json(configuration: Configuration) -> str:
    if not isinstance(configuration, Configuration):
        raise TypeError("configuration must be a Configuration")
    return _json_text("configuration", configuration.serialize())


__all__ = ["IoTHubConfigurationManager", "IoTHubJobManager", "IoTHubRegistryManager"]
