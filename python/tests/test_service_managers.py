"""The rest of the service API against the emulator: IoTHubRegistryManager's identities, bulk,
query, statistics and module twins; IoTHubJobManager; IoTHubConfigurationManager; the models."""

import datetime
import json
import time
import uuid
from typing import Any, Callable

import pytest

from azure_iot_rs.exceptions import HttpOperationError
from azure_iot_rs.hub import IoTHubConfigurationManager, IoTHubJobManager, IoTHubRegistryManager
from azure_iot_rs.hub.models import (
    CloudToDeviceMethod,
    Configuration,
    ConfigurationContent,
    ConfigurationMetrics,
    ConfigurationQueriesTestInput,
    ExportImportDevice,
    JobProperties,
    JobRequest,
    QuerySpecification,
    SymmetricKey,
    Twin,
    TwinProperties,
)

KEY_A = "a2V5IGtleSBrZXkga2V5IGtleSBrZXkga2V5IGtleSE="
KEY_B = "YW5vdGhlciBrZXkgYW5vdGhlciBrZXkgYW5vdGhlciE="


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def status_of(call: Callable[[], Any]) -> int:
    with pytest.raises(HttpOperationError) as raised:
        call()
    assert raised.value.response.status_code == raised.value.status_code
    return int(raised.value.status_code or 0)


def until(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Polls `condition` until it returns something true (the emulator's jobs run in the
    background); fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def jobs(hub: Any) -> IoTHubJobManager:
    return IoTHubJobManager.from_connection_string(hub.owner, server_verification_cert=hub.ca, https_port=hub.ports["https"])


@pytest.fixture(scope="module")
def configurations(hub: Any) -> IoTHubConfigurationManager:
    return IoTHubConfigurationManager.from_connection_string(
        hub.owner, server_verification_cert=hub.ca, https_port=hub.ports["https"]
    )


# ---- models ------------------------------------------------------------------------------


def test_models_take_the_official_keywords_and_serialize_as_the_hub_reads_them() -> None:
    when = datetime.datetime(2026, 12, 3, 10, 0, tzinfo=datetime.timezone.utc)
    request = JobRequest(
        job_id="j", type="scheduleUpdateTwin", query_condition="deviceId = 'x'", start_time=when,
        update_twin=Twin(tags={"a": 1}, properties=TwinProperties(desired={"b": 2})), max_execution_time_in_seconds=60,
    )
    assert request.serialize() == {
        "jobId": "j", "type": "scheduleUpdateTwin", "queryCondition": "deviceId = 'x'",
        "startTime": "2026-12-03T10:00:00Z", "maxExecutionTimeInSeconds": 60,
        "updateTwin": {"tags": {"a": 1}, "properties": {"desired": {"b": 2}}},
    }
    assert request.as_dict()["update_twin"] == {"tags": {"a": 1}, "properties": {"desired": {"b": 2}}}
    config = Configuration._from_hub({"id": "c", "createdTimeUtc": "2026-12-03T10:00:00.1234567Z", "priority": 3,
                                      "systemMetrics": {"results": {"targetedCount": 2}, "queries": {}}})
    assert config.created_time_utc == datetime.datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=datetime.timezone.utc)
    assert config.system_metrics is not None and config.system_metrics.results == {"targetedCount": 2}
    assert Configuration(id="c") == Configuration(id="c") and Configuration(id="c") != Configuration(id="d")
    with pytest.raises(TypeError, match="unexpected keyword"):
        Configuration(identifier="c")  # type: ignore[call-arg]
    assert KEY_A not in repr(SymmetricKey(primary_key=KEY_A, secondary_key=KEY_B))


# ---- registry manager --------------------------------------------------------------------


def test_device_updates_with_etags_and_other_authentications(registry: IoTHubRegistryManager) -> None:
    device_id = uid("py-upd")
    created = registry.create_device_with_sas(device_id, KEY_A, KEY_B, "enabled", status_reason="new")
    assert created.status_reason == "new"
    assert isinstance(created.connection_state_updated_time, datetime.datetime)
    updated = registry.update_device_with_sas(device_id, created.etag, KEY_B, KEY_A, "disabled")
    assert updated.status == "disabled" and updated.etag != created.etag
    assert updated.authentication is not None and updated.authentication.symmetric_key is not None
    assert updated.authentication.symmetric_key.primary_key == KEY_B
    assert status_of(lambda: registry.update_device_with_sas(device_id, created.etag, KEY_A, KEY_B, "enabled")) == 412
    x509 = registry.update_device_with_x509(device_id, updated.etag, "A" * 40, "B" * 40, "enabled")
    assert x509.authentication is not None and x509.authentication.type == "selfSigned"
    ca = registry.update_device_with_certificate_authority(device_id, "*", "enabled", iot_edge=True)
    assert ca.authentication is not None and ca.authentication.type == "certificateAuthority"
    assert ca.capabilities is not None and ca.capabilities.iot_edge is True
    other = registry.create_device_with_certificate_authority(uid("py-ca"), "enabled")
    assert other.authentication is not None and other.authentication.type == "certificateAuthority"
    assert device_id in [d.device_id for d in registry.get_devices()]
    assert len(registry.get_devices(1)) == 1
    registry.delete_device(other.device_id or "")
    assert status_of(lambda: registry.delete_device(device_id, created.etag)) == 412
    registry.delete_device(device_id, ca.etag)


def test_modules_create_get_list_update_delete(registry: IoTHubRegistryManager, device: Any) -> None:
    device_id = device["device_id"]
    module = registry.create_module_with_sas(device_id, "m1", "me", KEY_A, KEY_B)
    assert module.module_id == "m1" and module.managed_by == "me"
    got = registry.get_module(device_id, "m1")
    assert got.authentication is not None and got.authentication.symmetric_key is not None
    assert got.authentication.symmetric_key.primary_key == KEY_A
    updated = registry.update_module_with_sas(device_id, "m1", "you", got.etag, KEY_B, KEY_A)
    assert updated.managed_by == "you"
    assert status_of(lambda: registry.update_module_with_sas(device_id, "m1", "x", got.etag, KEY_A, KEY_B)) == 412
    x509 = registry.create_module_with_x509(device_id, "m2", None, "C" * 40, "D" * 40)
    assert x509.authentication is not None and x509.authentication.x509_thumbprint is not None
    assert x509.authentication.x509_thumbprint.primary_thumbprint == "C" * 40
    registry.update_module_with_x509(device_id, "m2", None, "*", "E" * 40, "F" * 40)
    registry.create_module_with_certificate_authority(device_id, "m3", None)
    registry.update_module_with_certificate_authority(device_id, "m3", "edge", "*")
    assert sorted(m.module_id or "" for m in registry.get_modules(device_id)) == ["m1", "m2", "m3"]
    registry.delete_module(device_id, "m2")
    assert status_of(lambda: registry.get_module(device_id, "m2")) == 404


def test_module_twins_get_update_replace(registry: IoTHubRegistryManager, device: Any) -> None:
    device_id = device["device_id"]
    registry.create_module_with_sas(device_id, "tw", None, "", "")
    twin = registry.get_module_twin(device_id, "tw")
    assert twin.module_id == "tw" and twin.device_id == device_id
    patch = Twin(tags={"t": 1}, properties=TwinProperties(desired={"a": 1, "b": 2}))
    updated = registry.update_module_twin(device_id, "tw", patch, twin.etag)
    assert updated.tags == {"t": 1} and updated.properties is not None and updated.properties.desired is not None
    assert updated.properties.desired["b"] == 2
    replaced = registry.replace_module_twin(device_id, "tw", Twin(properties=TwinProperties(desired={"c": 3})))
    assert replaced.properties is not None and replaced.properties.desired is not None
    assert "a" not in replaced.properties.desired and replaced.properties.desired["c"] == 3
    assert status_of(lambda: registry.update_module_twin(device_id, "tw", patch, twin.etag)) == 412
    device_twin = registry.replace_twin(device_id, Twin(tags={"only": True}))
    assert device_twin.tags == {"only": True}
    assert status_of(lambda: registry.get_module_twin(device_id, "nope")) == 404


def test_invoke_device_module_method_on_an_offline_module_is_404(registry: IoTHubRegistryManager, device: Any) -> None:
    registry.create_module_with_sas(device["device_id"], "mm", None, "", "")
    call = CloudToDeviceMethod(method_name="m", payload={}, response_timeout_in_seconds=5, connect_timeout_in_seconds=0)
    assert status_of(lambda: registry.invoke_device_module_method(device["device_id"], "mm", call)) == 404


def test_query_pages_with_continuation_tokens(registry: IoTHubRegistryManager) -> None:
    prefix = uid("py-q")
    for i in range(5):
        registry.create_device_with_sas(f"{prefix}-{i}", "", "", "enabled")
    spec = QuerySpecification(query=f"SELECT * FROM devices WHERE STARTSWITH(deviceId, '{prefix}')")
    seen, token, pages = [], None, 0
    while True:
        page = registry.query_iot_hub(spec, token, 2)
        pages += 1
        assert page.type == "twin" and page.items is not None
        seen += [item.device_id for item in page.items]
        token = page.continuation_token
        if not token:
            break
    assert sorted(seen) == [f"{prefix}-{i}" for i in range(5)] and pages == 3
    everything = registry.query_iot_hub(spec)
    assert everything.continuation_token is None and everything.items is not None and len(everything.items) == 5
    count = registry.query_iot_hub(QuerySpecification(query="SELECT COUNT() AS n FROM devices"))
    assert count.type == "raw" and count.items is not None and len(count.items) == 1
    assert status_of(lambda: registry.query_iot_hub(QuerySpecification(query="SELECT FROM"))) == 400
    with pytest.raises(TypeError):
        registry.query_iot_hub("SELECT * FROM devices")  # type: ignore[arg-type]
    for i in range(5):
        registry.delete_device(f"{prefix}-{i}")


def test_statistics(registry: IoTHubRegistryManager, device: Any) -> None:
    stats = registry.get_device_registry_statistics()
    assert stats.total_device_count is not None and stats.total_device_count >= 1
    assert (stats.enabled_device_count or 0) + (stats.disabled_device_count or 0) == stats.total_device_count
    assert registry.get_service_statistics().connected_device_count is not None


def test_bulk_create_update_delete_and_per_entry_errors(registry: IoTHubRegistryManager) -> None:
    a, b = uid("py-bulk"), uid("py-bulk")
    result = registry.bulk_create_or_update_devices([
        ExportImportDevice(id=a, import_mode="create"),
        ExportImportDevice(id=b, import_mode="create", status="disabled"),
    ])
    assert result.is_successful, result.errors
    assert registry.get_device(b).status == "disabled"
    again = registry.bulk_create_or_update_devices([ExportImportDevice(id=a, import_mode="create")])
    assert again.is_successful is False and again.errors is not None
    assert [e.device_id for e in again.errors] == [a] and again.errors[0].error_code
    result = registry.bulk_create_or_update_devices([
        ExportImportDevice(id=a, import_mode="delete"), ExportImportDevice(id=b, import_mode="delete"),
    ])
    assert result.is_successful
    assert status_of(lambda: registry.get_device(a)) == 404
    with pytest.raises(ValueError, match="import_mode"):
        registry.bulk_create_or_update_devices([ExportImportDevice(id=a, import_mode="sideways")])
    with pytest.raises(ValueError, match="twin"):
        registry.bulk_create_or_update_devices([ExportImportDevice(id=a, import_mode="create", tags={"x": 1})])
    with pytest.raises(ValueError, match="scope"):
        registry.bulk_create_or_update_devices([ExportImportDevice(id=a, import_mode="create", device_scope="s")])


# ---- job manager -------------------------------------------------------------------------


def test_scheduled_twin_job_get_query_and_errors(registry: IoTHubRegistryManager, jobs: IoTHubJobManager, device: Any) -> None:
    job_id = uid("py-job")
    request = JobRequest(
        job_id=job_id, type="scheduleUpdateTwin", query_condition=f"deviceId = '{device['device_id']}'",
        update_twin=Twin(tags={"wave": 7}), start_time=datetime.datetime.now(datetime.timezone.utc),
        max_execution_time_in_seconds=60,
    )
    created = jobs.create_scheduled_job(job_id, request)
    assert created.job_id == job_id and created.type == "scheduleUpdateTwin"
    done = until(lambda: (lambda j: j if j.status in ("completed", "failed") else None)(jobs.get_scheduled_job(job_id)))
    assert done.status == "completed" and done.device_job_statistics is not None
    assert done.device_job_statistics.succeeded_count == 1
    assert isinstance(done.created_time, datetime.datetime)
    assert registry.get_twin(device["device_id"]).tags == {"wave": 7}
    page = jobs.query_scheduled_jobs("scheduleUpdateTwin", "completed")
    assert job_id in [item["jobId"] for item in page.items or []]
    assert status_of(lambda: jobs.create_scheduled_job(job_id, request)) == 409
    assert status_of(lambda: jobs.get_scheduled_job(uid("py-none"))) == 404


def test_scheduled_method_job_later_is_cancelled(jobs: IoTHubJobManager, device: Any) -> None:
    job_id = uid("py-later")
    request = JobRequest(
        type="scheduleDeviceMethod", query_condition=f"deviceId = '{device['device_id']}'",
        cloud_to_device_method=CloudToDeviceMethod(method_name="reboot", payload={"a": 1}, response_timeout_in_seconds=10),
        start_time=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
        max_execution_time_in_seconds=60,
    )
    created = jobs.create_scheduled_job(job_id, request)
    assert created.status == "scheduled" and created.job_id == job_id
    assert created.cloud_to_device_method is not None and created.cloud_to_device_method.method_name == "reboot"
    cancelled = jobs.cancel_scheduled_job(job_id)
    assert cancelled.status == "cancelled"
    assert jobs.get_scheduled_job(job_id).status == "cancelled"
    assert job_id in [item["jobId"] for item in jobs.query_scheduled_jobs(None, "cancelled").items or []]


def test_import_export_jobs(hub: Any, registry: IoTHubRegistryManager, jobs: IoTHubJobManager) -> None:
    device_id = uid("py-exp")
    created = registry.create_device_with_sas(device_id, KEY_A, KEY_B, "enabled")
    status, body = hub.owner_request(f"/$emulator/blob/containers/{uid('pyexp')}/sas", b"", "POST")
    assert status == 200, body
    uri = json.loads(body)["containerUri"]

    def finished(job_id: str) -> JobProperties:
        return until(lambda: (lambda j: j if j.status in ("completed", "failed", "cancelled") else None)(
            jobs.get_import_export_job(job_id)))

    started = jobs.create_import_export_job(JobProperties(type="export", output_blob_container_uri=uri, exclude_keys_in_export=False))
    assert started.job_id and started.type == "export"
    assert finished(started.job_id).status == "completed"
    registry.delete_device(device_id)
    back = jobs.create_import_export_job(JobProperties(type="import", input_blob_container_uri=uri, output_blob_container_uri=uri))
    assert finished(back.job_id or "").status == "completed"
    restored = registry.get_device(device_id)
    assert restored.authentication is not None and restored.authentication.symmetric_key is not None
    assert created.authentication is not None and created.authentication.symmetric_key is not None
    assert restored.authentication.symmetric_key.primary_key == created.authentication.symmetric_key.primary_key
    assert {started.job_id, back.job_id} <= {j.job_id for j in jobs.get_import_export_jobs()}
    # Cancelling a finished job: the hub's answer, whatever it is, surfaces as the SDK's error or None.
    try:
        jobs.cancel_import_export_job(back.job_id or "")
    except HttpOperationError as e:
        assert e.status_code is not None and e.status_code >= 400
    assert status_of(lambda: jobs.get_import_export_job(uid("py-none"))) == 404
    registry.delete_device(device_id)


# ---- configuration manager ---------------------------------------------------------------


def test_configuration_lifecycle(registry: IoTHubRegistryManager, configurations: IoTHubConfigurationManager, device: Any) -> None:
    config_id = uid("py-config")
    registry.update_twin(device["device_id"], Twin(tags={"role": config_id}))
    config = Configuration(
        id=config_id, labels={"team": "py"}, priority=10, target_condition=f"tags.role = '{config_id}'",
        content=ConfigurationContent(device_content={"properties.desired.settings": {"interval": 5}}),
        metrics=ConfigurationMetrics(queries={"applied": "SELECT deviceId FROM devices WHERE properties.desired.settings.interval = 5"}),
    )
    created = configurations.create_configuration(config)
    assert created.id == config_id and created.priority == 10 and created.etag
    assert isinstance(created.created_time_utc, datetime.datetime)
    assert status_of(lambda: configurations.create_configuration(config)) == 409
    got = until(lambda: (lambda c: c if (c.system_metrics and (c.system_metrics.results or {}).get("targetedCount")) else None)(
        configurations.get_configuration(config_id)))
    assert got.system_metrics is not None and got.system_metrics.results is not None
    assert got.system_metrics.results["targetedCount"] == 1
    twin = until(lambda: (lambda t: t if (t.properties and (t.properties.desired or {}).get("settings")) else None)(
        registry.get_twin(device["device_id"])))
    assert twin.properties.desired["settings"] == {"interval": 5}
    assert config_id in [c.id for c in configurations.get_configurations()]
    got.priority = 20
    updated = configurations.update_configuration(got, got.etag)
    assert updated.priority == 20 and updated.etag != got.etag
    assert status_of(lambda: configurations.update_configuration(got, got.etag)) == 412
    assert status_of(lambda: configurations.delete_configuration(config_id, got.etag)) == 412
    configurations.delete_configuration(config_id, updated.etag)
    assert status_of(lambda: configurations.get_configuration(config_id)) == 404


def test_configuration_queries_and_edge_content(
    registry: IoTHubRegistryManager, configurations: IoTHubConfigurationManager, device: Any
) -> None:
    good = configurations.test_configuration_queries(ConfigurationQueriesTestInput(
        target_condition="tags.a = 1", custom_metric_queries={"m": "SELECT deviceId FROM devices"}))
    assert not good.target_condition_error and not any((good.custom_metric_query_errors or {}).values())
    bad = configurations.test_configuration_queries(ConfigurationQueriesTestInput(target_condition="tags.a = = 1"))
    assert bad.target_condition_error
    content = ConfigurationContent(modules_content={"py-edge-mod": {"properties.desired": {"level": 4}}})
    configurations.apply_configuration_on_edge_device(device["device_id"], content)
    twin = registry.get_module_twin(device["device_id"], "py-edge-mod")
    assert twin.properties is not None and (twin.properties.desired or {}).get("level") == 4
    # The emulator does not run IoT Edge deployments: its 501 is the SDK's error, not a success.
    deployment = Configuration(id=uid("py-deploy"), target_condition="tags.edge = true", priority=1, content=content)
    assert status_of(lambda: configurations.create_configuration(deployment)) == 501
    with pytest.raises(TypeError):
        configurations.apply_configuration_on_edge_device(device["device_id"], {"modulesContent": {}})  # type: ignore[arg-type]


def test_bad_manager_arguments() -> None:
    with pytest.raises(ValueError):
        IoTHubJobManager.from_connection_string("HostName=h;DeviceId=d;SharedAccessKey=aGVsbG8=")
    with pytest.raises(ValueError):
        IoTHubConfigurationManager.from_connection_string("HostName=h;DeviceId=d;SharedAccessKey=aGVsbG8=")
    with pytest.raises(TypeError):
        IoTHubJobManager.from_connection_string(None)  # type: ignore[arg-type]
