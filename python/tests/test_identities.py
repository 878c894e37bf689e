"""The other ways to authenticate and the module client, against the emulator: SAS token,
X.509 (self-signed, registered by thumbprint), symmetric-key module with outputs, twin and
methods."""

import hashlib
import os
import shutil
import ssl
import threading
import uuid
from typing import Any, Dict, List

import pytest

from conftest import sas_token, self_signed_certificate

from azure_iot_rs import IoTHubDeviceClient, IoTHubModuleClient, Message, MethodResponse, X509
from azure_iot_rs.aio import IoTHubModuleClient as AsyncModuleClient
from azure_iot_rs.hub.models import CloudToDeviceMethod

WAIT = 20


def test_create_from_sastoken_sends_telemetry(hub, device):
    token = sas_token(f"{hub.hostname}/devices/{device['device_id']}", device["key"])
    client = IoTHubDeviceClient.create_from_sastoken(token, **hub.device_kwargs())
    client.send_message("with a token")
    client.shutdown()
    assert [e["body"] for e in hub.telemetry(device["device_id"], 1)] == ["with a token"]


def test_device_and_module_connection_strings_are_not_mixed_up():
    with pytest.raises(ValueError, match="ModuleId"):
        IoTHubDeviceClient.create_from_connection_string("HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=aGVsbG8=")
    with pytest.raises(ValueError, match="ModuleId"):
        IoTHubModuleClient.create_from_connection_string("HostName=h;DeviceId=d;SharedAccessKey=aGVsbG8=")


def test_a_malformed_sastoken_fails_at_creation():
    with pytest.raises(ValueError, match="(?i)sastoken"):
        IoTHubDeviceClient.create_from_sastoken("SharedAccessSignature sig=abc&se=1")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_x509_self_signed_device(hub, registry, tmp_path):
    device_id = "py-x509-" + uuid.uuid4().hex[:8]
    cert, key = self_signed_certificate(tmp_path, device_id)
    with open(cert) as f:
        thumbprint = hashlib.sha1(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest().upper()
    registry.create_device_with_x509(device_id, thumbprint, thumbprint, "enabled")
    client = IoTHubDeviceClient.create_from_x509_certificate(
        X509(cert_file=cert, key_file=key), hub.hostname, device_id, **hub.device_kwargs()
    )
    client.connect()
    client.send_message("from a certificate")
    client.shutdown()
    registry.delete_device(device_id)
    assert [e["body"] for e in hub.telemetry(device_id, 1)] == ["from a certificate"]


def test_a_bad_certificate_file_fails_at_creation(tmp_path):
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    with pytest.raises(ValueError, match="x509"):
        IoTHubDeviceClient.create_from_x509_certificate(
            X509(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")), "localhost", "d"
        )


def test_module_client_output_twin_and_method(hub, device, registry):
    module = registry.create_module_with_sas(device["device_id"], "sensor", None, "", "")
    assert module.module_id == "sensor" and module.authentication is not None
    assert module.authentication.symmetric_key is not None
    key = module.authentication.symmetric_key.primary_key
    assert key
    client = IoTHubModuleClient.create_from_symmetric_key(
        key, hub.hostname, device["device_id"], "sensor", **hub.device_kwargs()
    )
    calls: List[str] = []

    def on_method(request):
        calls.append(request.name)
        client.send_method_response(MethodResponse(request.request_id, 200, {"module": True}))

    client.on_method_request_received = on_method
    client.connect()
    client.send_message_to_output(Message("to the output", message_id="o-1"), "alerts")
    client.patch_twin_reported_properties({"module_state": "ok"})
    assert client.get_twin()["reported"]["module_state"] == "ok"
    result = registry.invoke_device_module_method(device["device_id"], "sensor", CloudToDeviceMethod("check", None, 20))
    client.shutdown()
    assert (result.status, result.payload) == (200, {"module": True})
    assert calls == ["check"]
    event = hub.telemetry(device["device_id"], 1)[0]
    assert event["body"] == "to the output"
    assert event.get("moduleId") == "sensor", event
    assert event["systemProperties"].get("outputName") == "alerts", event


def test_aio_module_client_sends_to_an_output(hub, device, registry):
    import asyncio

    module = registry.create_module_with_sas(device["device_id"], "edge", None, "", "")
    key = module.authentication.symmetric_key.primary_key  # type: ignore[union-attr]
    cs = f"HostName={hub.hostname};DeviceId={device['device_id']};ModuleId=edge;SharedAccessKey={key}"

    async def run() -> None:
        client = AsyncModuleClient.create_from_connection_string(cs, **hub.device_kwargs())
        await client.connect()
        await client.send_message_to_output("aio output", "out1")
        await client.shutdown()

    asyncio.run(run())
    event = hub.telemetry(device["device_id"], 1)[0]
    assert event["body"] == "aio output" and event.get("moduleId") == "edge", event
