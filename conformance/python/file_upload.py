"""The official Python device SDK's file-upload flow against the emulator: azure-iot-device's
get_storage_info_for_blob, the upload with azure-storage-blob (as the SDK's samples do it),
notify_blob_upload_status; the notification read by this project's service client through
`azure-iot hub monitor-file-notifications`.

Run by ../run.sh with HUB_JSON, DATA_DIR and AZURE_IOT_BIN set, and REQUESTS_CA_BUNDLE naming
the emulator's CA (azure-storage-blob trusts it through requests). Ends with "N passed, M
failed"; exit status 0 only if nothing failed.
"""

import json
import os
import subprocess

from harness import check, defaults, finish

from azure.iot.device import IoTHubDeviceClient
from azure.iot.hub import IoTHubRegistryManager
from azure.storage.blob import BlobClient

defaults(client="Python SDKs", transport="HTTPS")
HUB = json.load(open(os.environ["HUB_JSON"]))
DATA_DIR = os.environ["DATA_DIR"]
CA = open(os.path.join(DATA_DIR, "ca.pem")).read()
RM = IoTHubRegistryManager.from_connection_string(HUB["connection_strings"]["iothubowner"])


def device_client(device_id):
    d = RM.create_device_with_sas(device_id, "", "", "enabled")
    key = d.authentication.symmetric_key.primary_key
    cs = f"HostName={HUB['hostname']};DeviceId={device_id};SharedAccessKey={key}"
    return IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=CA)


def blob_url(info):
    # What every SDK and the samples build from the hub's answer.
    return f"https://{info['hostName']}/{info['containerName']}/{info['blobName']}{info['sasToken']}"


def notifications(count, timeout=20):
    done = subprocess.run(
        [os.environ["AZURE_IOT_BIN"], "hub", "monitor-file-notifications", "--output", "json",
         "--count", str(count), "--timeout", str(timeout), "--data-dir", DATA_DIR],
        capture_output=True, text=True, timeout=timeout + 30,
    )
    if done.returncode != 0:
        raise AssertionError(f"monitor-file-notifications failed: {done.stderr.strip()}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@check("file upload: get_storage_info_for_blob, azure-storage-blob upload_blob, notify_blob_upload_status; the service reads the notification",
       scenario="file upload and notification")
def single_put():
    client = device_client("py-upload-1")
    try:
        info = client.get_storage_info_for_blob("py/report.txt")
        assert info["blobName"] == "py-upload-1/py/report.txt", info
        data = b"uploaded by the official Python SDK\n" * 100
        BlobClient.from_blob_url(blob_url(info)).upload_blob(data)
        client.notify_blob_upload_status(info["correlationId"], True, 200, "OK")
        got = notifications(1)
        assert len(got) == 1, got
        assert got[0]["blobName"] == "py-upload-1/py/report.txt", got
        assert got[0]["blobSizeInBytes"] == len(data), got
        assert got[0]["deviceId"] == "py-upload-1", got
        # The bytes are what was sent (read back through the same SAS URL, which grants read).
        back = BlobClient.from_blob_url(blob_url(info)).download_blob().readall()
        assert back == data, f"{len(back)} bytes read back"
    finally:
        client.shutdown()


@check("file upload in staged blocks (Put Block, Put Block List), and a failed upload reported: no notification",
       scenario="file upload and notification")
def blocks_and_failure():
    client = device_client("py-upload-2")
    try:
        info = client.get_storage_info_for_blob("big.bin")
        data = bytes(range(256)) * 200  # 51,200 bytes in 4 KiB blocks
        BlobClient.from_blob_url(blob_url(info), max_single_put_size=4096, max_block_size=4096).upload_blob(data)
        client.notify_blob_upload_status(info["correlationId"], True, 200, "OK")
        failed = client.get_storage_info_for_blob("never.bin")
        client.notify_blob_upload_status(failed["correlationId"], False, 500, "the upload failed")
        got = notifications(2, timeout=5)
        assert [n["blobName"] for n in got] == ["py-upload-2/big.bin"], got
        assert got[0]["blobSizeInBytes"] == len(data), got
    finally:
        client.shutdown()


finish()
