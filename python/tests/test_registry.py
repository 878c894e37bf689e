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


def test_without_a_cert_the_requests_ca_bundle_is_trusted_as_azure_iot_hub_does(hub, monkeypatch, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(hub.ca)
    ports = {"https_port": hub.ports["https"], "amqp_port": hub.ports["amqp"]}
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    trusted = IoTHubRegistryManager.from_connection_string(hub.owner, **ports)
    with pytest.raises(HttpOperationError) as raised:
        trusted.get_device("py-no-such-device")  # the TLS handshake passed: the hub answered
    assert raised.value.status_code == 404
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.setenv("CURL_CA_BUNDLE", str(ca_file))
    with pytest.raises(HttpOperationError) as raised:
        IoTHubRegistryManager.from_connection_string(hub.owner, **ports).get_device("py-no-such-device")
    assert raised.value.status_code == 404
    # Neither: the operating system's roots, which do not hold the emulator's CA.
    monkeypatch.delenv("CURL_CA_BUNDLE")
    untrusted = IoTHubRegistryManager.from_connection_string(hub.owner, **ports)
    with pytest.raises(HttpOperationError) as raised:
        untrusted.get_device("py-no-such-device")
    assert raised.value.status_code != 404
