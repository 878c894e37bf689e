"""File upload (sync and aio) against the emulator's blob endpoint: the three steps of
azure-iot-device, and this package's one-call `upload_file`, read back byte for byte."""

import asyncio
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict

import pytest

from azure_iot_rs import IoTHubDeviceClient
from azure_iot_rs.aio import IoTHubDeviceClient as AsyncDeviceClient
from azure_iot_rs.exceptions import ClientError


def client_for(hub: Any, device: Dict[str, str], transport: str = "mqtt") -> IoTHubDeviceClient:
    return IoTHubDeviceClient.create_from_connection_string(device["connection_string"], **hub.device_kwargs(transport))


def put_blob(hub: Any, info: Dict[str, str], data: bytes) -> int:
    """Writes the blob as an application does with the SAS URI (azure-storage-blob's Put Blob)."""
    uri = "https://{}/{}/{}{}".format(
        info["hostName"], info["containerName"], urllib.parse.quote(info["blobName"]), info["sasToken"]
    )
    request = urllib.request.Request(uri, data=data, method="PUT", headers={"x-ms-blob-type": "BlockBlob"})
    try:
        with urllib.request.urlopen(request, context=hub.ssl_context(), timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_three_steps_with_the_official_names_and_shapes(hub, device):
    client = client_for(hub, device)
    info = client.get_storage_info_for_blob("report.csv")
    assert sorted(info) == ["blobName", "containerName", "correlationId", "hostName", "sasToken"]
    assert info["blobName"] == f"{device['device_id']}/report.csv"
    assert info["sasToken"].startswith("?")
    assert put_blob(hub, info, b"a,b\n1,2\n") == 201
    client.notify_blob_upload_status(info["correlationId"], True, 201, "ok")
    assert hub.uploaded_file(f"{device['device_id']}/report.csv") == b"a,b\n1,2\n"

    # The hub has ended that upload: the same correlation id again is refused.
    with pytest.raises(ValueError):
        client.notify_blob_upload_status(info["correlationId"], True, 201, "ok")
    client.shutdown()


def test_upload_file_in_one_call_over_mqtt_amqp_and_https(hub, device):
    data = bytes(range(256)) * 1000  # 256 KB, every byte value
    for transport in ("mqtt", "amqp", "https"):
        client = client_for(hub, device, transport)
        client.upload_file(f"{transport}/data.bin", data)
        client.shutdown()
        assert hub.uploaded_file(f"{device['device_id']}/{transport}/data.bin") == data, transport
    client = client_for(hub, device)
    client.upload_file("text.txt", "héllo")  # a str is uploaded as UTF-8
    client.shutdown()
    assert hub.uploaded_file(f"{device['device_id']}/text.txt") == "héllo".encode()


def test_the_https_transport_sends_telemetry(hub, device):
    client = client_for(hub, device, "https")
    client.send_message("over https")
    with pytest.raises(ClientError):
        client.get_twin()  # IoT Hub offers no twins over HTTPS
    client.shutdown()
    assert [e["body"] for e in hub.telemetry(device["device_id"], 1)] == ["over https"]


def test_aio_file_upload(hub, device):
    async def run() -> Dict[str, str]:
        client = AsyncDeviceClient.create_from_connection_string(device["connection_string"], **hub.device_kwargs())
        await client.upload_file("aio.bin", b"\x00\x01aio")
        info = await client.get_storage_info_for_blob("steps.bin")
        assert put_blob(hub, info, b"steps") == 201
        await client.notify_blob_upload_status(info["correlationId"], True, 201, "ok")
        await client.shutdown()
        return info

    asyncio.run(run())
    assert hub.uploaded_file(f"{device['device_id']}/aio.bin") == b"\x00\x01aio"
    assert hub.uploaded_file(f"{device['device_id']}/steps.bin") == b"steps"


def test_a_failed_upload_is_reported_and_leaves_no_file(hub, device):
    client = client_for(hub, device)
    info = client.get_storage_info_for_blob("never.bin")
    forged = dict(info, sasToken=info["sasToken"].replace("sig=", "sig=AA"))
    assert put_blob(hub, forged, b"x") == 403
    client.notify_blob_upload_status(info["correlationId"], False, 403, "storage refused the SAS")
    client.shutdown()
    assert hub.uploaded_file(f"{device['device_id']}/never.bin") is None


def test_bad_arguments_name_the_argument(hub, device):
    client = client_for(hub, device)
    with pytest.raises(TypeError, match="blob_name"):
        client.get_storage_info_for_blob(7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="blob_name"):
        client.upload_file("", b"x")
    with pytest.raises(TypeError, match="data"):
        client.upload_file("a.bin", 42)
    with pytest.raises(TypeError, match="is_success"):
        client.notify_blob_upload_status("c", 1, 201, "ok")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="status_code"):
        client.notify_blob_upload_status("c", True, "201", "ok")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="transport"):
        IoTHubDeviceClient.create_from_connection_string(device["connection_string"], transport="https", websockets=True)
    assert not client.connected  # nothing above reached the hub
    client.shutdown()
