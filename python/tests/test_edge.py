"""``IoTHubModuleClient.create_from_edge_environment`` (sync and aio) against a fake IoT Edge
workload API on a unix socket (the Edge daemon's API: trust bundle, signatures) with the
emulator as the gateway; and the errors azure-iot-device 2.x raises for a bad environment."""

import asyncio
import os
import tempfile
from typing import Any, Dict, Iterator

import pytest
from device_doubles import FakeWorkloadApi

from azure_iot_rs import IoTHubModuleClient
from azure_iot_rs import aio
from azure_iot_rs.exceptions import ConnectionFailedError

API_VERSION = "2019-01-30"
GENERATION = "637000000000000000"
EDGE_VARIABLES = (
    "IOTEDGE_WORKLOADURI", "IOTEDGE_DEVICEID", "IOTEDGE_MODULEID", "IOTEDGE_IOTHUBHOSTNAME",
    "IOTEDGE_GATEWAYHOSTNAME", "IOTEDGE_APIVERSION", "IOTEDGE_MODULEGENERATIONID", "IOTEDGE_AUTHSCHEME",
    "EdgeHubConnectionString", "EdgeModuleCACertificateFile",
)


@pytest.fixture
def edge(hub: Any, device: Dict[str, str], registry: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dict[str, Any]]:
    """A module of a new device, a workload API that signs for it, and the IOTEDGE_* variables
    of an Edge runtime pointing at both (the emulator is the gateway)."""
    module = registry.create_module_with_sas(device["device_id"], "edgemod", None, "", "")
    assert module.authentication is not None and module.authentication.symmetric_key is not None
    key = module.authentication.symmetric_key.primary_key
    assert key
    for name in EDGE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with tempfile.TemporaryDirectory() as directory:
        socket_path = os.path.join(directory, "workload.sock")
        api = FakeWorkloadApi(socket_path, hub.ca, {"edgemod": key}, GENERATION)
        variables = {
            "IOTEDGE_WORKLOADURI": f"unix://{socket_path}",
            "IOTEDGE_DEVICEID": device["device_id"],
            "IOTEDGE_MODULEID": "edgemod",
            "IOTEDGE_IOTHUBHOSTNAME": hub.hostname,
            "IOTEDGE_GATEWAYHOSTNAME": hub.hostname,
            "IOTEDGE_APIVERSION": API_VERSION,
            "IOTEDGE_MODULEGENERATIONID": GENERATION,
            "IOTEDGE_AUTHSCHEME": "sasToken",
        }
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        try:
            yield {"api": api, "key": key, "device_id": device["device_id"], "socket": socket_path}
        finally:
            api.close()


def test_edge_module_connects_through_the_workload_api(hub, edge):
    client = IoTHubModuleClient.create_from_edge_environment(port=hub.ports["mqtt"])
    client.send_message_to_output("from the edge", "out1")
    twin = client.get_twin()
    client.shutdown()
    assert "desired" in twin
    requests = edge["api"].requests
    assert requests[0][:2] == ("GET", "/trust-bundle")
    assert requests[0][2]["api-version"] == [API_VERSION]
    signs = [r for r in requests if r[0] == "POST"]
    assert signs and signs[0][1] == f"/modules/edgemod/genid/{GENERATION}/sign"
    assert signs[0][2]["api-version"] == [API_VERSION]
    assert {signs[0][3]["keyId"], signs[0][3]["algo"]} == {"primary", "HMACSHA256"}
    event = hub.telemetry(edge["device_id"], 1)[0]
    assert event["body"] == "from the edge" and event.get("moduleId") == "edgemod", event


def test_the_gateway_host_is_what_is_dialled(hub, edge, monkeypatch):
    monkeypatch.setenv("IOTEDGE_GATEWAYHOSTNAME", "gateway.invalid")
    client = IoTHubModuleClient.create_from_edge_environment(port=hub.ports["mqtt"], connection_retry=False)
    with pytest.raises(ConnectionFailedError):
        client.connect()
    client.shutdown()


def test_aio_edge_module(hub, edge):
    async def run() -> None:
        client = aio.IoTHubModuleClient.create_from_edge_environment(port=hub.ports["mqtt"])
        await client.connect()
        await client.send_message_to_output("aio edge", "out2")
        await client.shutdown()

    asyncio.run(run())
    assert hub.telemetry(edge["device_id"], 1)[0]["body"] == "aio edge"


def test_no_edge_environment_is_an_os_error(edge, monkeypatch):
    monkeypatch.delenv("IOTEDGE_WORKLOADURI")
    with pytest.raises(OSError, match="IoT Edge environment not configured correctly"):
        IoTHubModuleClient.create_from_edge_environment()
    with pytest.raises(OSError, match="IoT Edge environment not configured correctly"):
        aio.IoTHubModuleClient.create_from_edge_environment()


def test_an_unreachable_workload_api_is_an_os_error(edge, monkeypatch):
    monkeypatch.setenv("IOTEDGE_WORKLOADURI", f"unix://{edge['socket']}.absent")
    with pytest.raises(OSError, match="Unexpected failure in IoTEdge"):
        IoTHubModuleClient.create_from_edge_environment()


def test_a_workload_api_that_will_not_sign_is_a_value_error(edge):
    edge["api"].sign_status = 500
    with pytest.raises(ValueError, match="Could not create a SasToken"):
        IoTHubModuleClient.create_from_edge_environment()


def test_options_the_environment_gives_are_type_errors(edge):
    for name in ("server_verification_cert", "gateway_hostname"):
        with pytest.raises(TypeError, match=name):
            IoTHubModuleClient.create_from_edge_environment(**{name: "x"})


def test_the_local_debugging_variables(hub, edge, monkeypatch, tmp_path):
    for name in ("IOTEDGE_WORKLOADURI", "IOTEDGE_DEVICEID"):
        monkeypatch.delenv(name)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(hub.ca)
    cs = f"HostName={hub.hostname};DeviceId={edge['device_id']};ModuleId=edgemod;SharedAccessKey={edge['key']}"
    monkeypatch.setenv("EdgeModuleCACertificateFile", str(ca_file))
    monkeypatch.setenv("EdgeHubConnectionString", cs)
    with pytest.raises(ValueError, match="Invalid Connection String"):
        IoTHubModuleClient.create_from_edge_environment()
    monkeypatch.setenv("EdgeHubConnectionString", f"{cs};GatewayHostName={hub.hostname}")
    client = IoTHubModuleClient.create_from_edge_environment(port=hub.ports["mqtt"])
    client.send_message_to_output("debugging", "out3")
    client.shutdown()
    monkeypatch.setenv("EdgeModuleCACertificateFile", str(tmp_path / "absent.pem"))
    with pytest.raises(FileNotFoundError):
        IoTHubModuleClient.create_from_edge_environment()
