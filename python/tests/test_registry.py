"""IoTHubRegistryManager against the emulator."""

import uuid

import pytest

from azure_iot_rs.exceptions import HttpOperationError
from azure_iot_rs.hub import IoTHubRegistryManager


def test_create_get_delete_device(registry):
    device_id = "py-reg-" + uuid.uuid4().hex[:8]
    key = "a2V5IGtleSBrZXkga2V5IGtleSBrZXkga2V5IGtleSE="
    created = registry.create_device_with_sas(device_id, key, key, "disabled")
    assert created.device_id == device_id and created.status == "disabled"
    assert created.authentication.symmetric_key.primary_key == key
    assert "key" not in repr(created.authentication.symmetric_key).lower().replace("symmetrickey", "").replace("_key", "")
    fetched = registry.get_device(device_id)
    assert fetched.etag and fetched.generation_id == created.generation_id
    registry.delete_device(device_id)
    with pytest.raises(HttpOperationError) as raised:
        registry.get_device(device_id)
    assert raised.value.status_code == 404


def test_duplicate_device_is_409(registry):
    device_id = "py-dup-" + uuid.uuid4().hex[:8]
    registry.create_device_with_sas(device_id, "", "", "enabled")
    with pytest.raises(HttpOperationError) as raised:
        registry.create_device_with_sas(device_id, "", "", "enabled")
    assert raised.value.status_code == 409
    registry.delete_device(device_id)


def test_bad_service_connection_string_and_arguments():
    with pytest.raises(ValueError):
        IoTHubRegistryManager.from_connection_string("HostName=h;DeviceId=d;SharedAccessKey=aGVsbG8=")
    with pytest.raises(TypeError):
        IoTHubRegistryManager.from_connection_string(None)  # type: ignore[arg-type]


def test_bad_status_is_a_value_error(registry):
    with pytest.raises(ValueError, match="status"):
        registry.create_device_with_sas("py-x", "", "", "sleeping")
