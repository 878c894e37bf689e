"""File upload with Azurite as the real blob service (the emulator started with
--storage-connection-string, ADR 25): the hub hands out Azurite's URL and a SAS signed with the
account key, Azurite (not the emulator) checks that SAS and stores the bytes, and the hub's
notification follows a Get Blob Properties it makes to Azurite.

Clients: the official Python SDK flow (azure-iot-device get_storage_info_for_blob, an
azure-storage-blob upload, notify_blob_upload_status), the official Node SDKs
(../node/upload_azurite.js: uploadToBlob over HTTPS, the service's file notification receiver)
and this project's CLI (`azure-iot device upload`). Every upload is read back from Azurite with
the account's connection string.

Run by ../run.sh with HUB_JSON, DATA_DIR, AZURE_IOT_BIN, AZURITE_CONNECTION_STRING and
STORAGE_CONTAINER set, and REQUESTS_CA_BUNDLE / NODE_EXTRA_CA_CERTS naming the emulator's CA
(which also issued Azurite's certificate). Ends with "N passed, M failed".
"""

import json
import os
import subprocess
import tempfile
import urllib.parse

from harness import azure_iot, check, defaults, finish

from azure.core.exceptions import HttpResponseError
from azure.iot.device import IoTHubDeviceClient
from azure.iot.hub import IoTHubRegistryManager
from azure.storage.blob import BlobClient, BlobServiceClient

defaults(client="Python SDKs", transport="HTTPS")
SCENARIO = "file upload to Azurite (storage account mode)"
HUB = json.load(open(os.environ["HUB_JSON"]))
DATA_DIR = os.environ["DATA_DIR"]
CA = open(os.path.join(DATA_DIR, "ca.pem")).read()
OWNER = HUB["connection_strings"]["iothubowner"]
RM = IoTHubRegistryManager.from_connection_string(OWNER)
AZURITE = BlobServiceClient.from_connection_string(os.environ["AZURITE_CONNECTION_STRING"])
CONTAINER = os.environ["STORAGE_CONTAINER"]
HERE = os.path.dirname(os.path.abspath(__file__))


def device(device_id):
    d = RM.create_device_with_sas(device_id, "", "", "enabled")
    key = d.authentication.symmetric_key.primary_key
    return f"HostName={HUB['hostname']};DeviceId={device_id};SharedAccessKey={key}"


def blob_url(info):
    return f"https://{info['hostName']}/{info['containerName']}/{info['blobName']}{info['sasToken']}"


def stored(blob_name):
    """The bytes Azurite holds for `blob_name` in the upload container."""
    return AZURITE.get_blob_client(CONTAINER, blob_name).download_blob().readall()


def notifications(count, timeout=20):
    lines = azure_iot("hub", "monitor-file-notifications", "--output", "json", "--count", str(count),
                      "--timeout", str(timeout), timeout=timeout + 30)
    return [json.loads(line) for line in lines]


@check("hub.json and the hub's answer name Azurite: hostName is its endpoint without https://, a create+write blob SAS",
       scenario=SCENARIO)
def answer_names_azurite():
    assert HUB["blob"]["account"] == "devstoreaccount1", HUB["blob"]
    assert HUB["blob"]["container"] == CONTAINER, HUB["blob"]
    assert "AccountKey" not in json.dumps(HUB) and "Eby8" not in json.dumps(HUB), "the account key is in hub.json"
    client = IoTHubDeviceClient.create_from_connection_string(device("az-answer"), server_verification_cert=CA)
    try:
        info = client.get_storage_info_for_blob("a.txt")
        endpoint = HUB["blob"]["endpoint"]
        assert info["hostName"] == endpoint.removeprefix("https://"), info
        assert info["containerName"] == CONTAINER, info
        sas = dict(urllib.parse.parse_qsl(info["sasToken"].lstrip("?")))
        assert (sas["sr"], sas["sp"], sas["spr"]) == ("b", "cw", "https"), sas
        client.notify_blob_upload_status(info["correlationId"], False, 500, "nothing uploaded")
    finally:
        client.shutdown()


@check("Python SDK flow to Azurite: get_storage_info_for_blob, upload_blob (one Put Blob and staged blocks), notify; the notification has Azurite's size and URI",
       scenario=SCENARIO)
def python_flow():
    client = IoTHubDeviceClient.create_from_connection_string(device("az-py"), server_verification_cert=CA)
    try:
        small = b"uploaded to Azurite by the official Python SDK\n" * 50
        info = client.get_storage_info_for_blob("py/small.txt")
        BlobClient.from_blob_url(blob_url(info)).upload_blob(small)
        client.notify_blob_upload_status(info["correlationId"], True, 201, "OK")
        big = bytes(range(256)) * 400
        info2 = client.get_storage_info_for_blob("py/blocks.bin")
        BlobClient.from_blob_url(blob_url(info2), max_single_put_size=8192, max_block_size=8192).upload_blob(big)
        client.notify_blob_upload_status(info2["correlationId"], True, 201, "OK")
        got = {n["blobName"]: n for n in notifications(2)}
        assert set(got) == {"az-py/py/small.txt", "az-py/py/blocks.bin"}, got
        assert got["az-py/py/small.txt"]["blobSizeInBytes"] == len(small), got
        assert got["az-py/py/blocks.bin"]["blobSizeInBytes"] == len(big), got
        endpoint = HUB["blob"]["endpoint"]
        assert got["az-py/py/small.txt"]["blobUri"] == f"{endpoint}/{CONTAINER}/az-py/py/small.txt", got
        assert stored("az-py/py/small.txt") == small
        assert stored("az-py/py/blocks.bin") == big
    finally:
        client.shutdown()


@check("Azurite itself refuses the device's SAS for another blob and for reading (the signature is Azure's)",
       scenario=SCENARIO)
def sas_scope():
    client = IoTHubDeviceClient.create_from_connection_string(device("az-scope"), server_verification_cert=CA)
    try:
        info = client.get_storage_info_for_blob("mine.txt")
        other = dict(info, blobName="az-py/py/small.txt")
        try:
            BlobClient.from_blob_url(blob_url(other)).upload_blob(b"overwrite", overwrite=True)
            raise AssertionError("Azurite accepted the SAS for another blob")
        except HttpResponseError as e:
            assert e.status_code == 403, e
        BlobClient.from_blob_url(blob_url(info)).upload_blob(b"mine")
        try:
            BlobClient.from_blob_url(blob_url(info)).download_blob().readall()
            raise AssertionError("the upload SAS granted read")
        except HttpResponseError as e:
            assert e.status_code == 403, e
        client.notify_blob_upload_status(info["correlationId"], True, 201, "OK")
        got = notifications(1)
        assert got[0]["blobName"] == "az-scope/mine.txt" and got[0]["blobSizeInBytes"] == 4, got
    finally:
        client.shutdown()


@check("Node SDKs to Azurite: uploadToBlob (azure-iot-device-http), the service's file notification receiver gets it",
       scenario=SCENARIO, client="Node SDKs")
def node_flow():
    size = 5 * 1024 * 1024 + 123  # more than one of uploadStream's 4 MiB buffers: staged blocks
    done = subprocess.run(
        ["node", os.path.join(HERE, "..", "node", "upload_azurite.js"), device("az-node"), OWNER,
         "node/upload.bin", str(size)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    n = json.loads(done.stdout.strip().splitlines()[-1])
    assert n["blobName"] == "az-node/node/upload.bin" and n["blobSizeInBytes"] == size, n
    assert len(stored("az-node/node/upload.bin")) == size


@check("this project's CLI to Azurite: azure-iot device upload, then the notification",
       scenario=SCENARIO, client="azure-iot (Rust)")
def rust_flow():
    device("az-rust")
    data = os.urandom(9 * 1024 * 1024 + 7)  # more than one block of the client's staged upload
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(data)
        f.flush()
        azure_iot("device", "upload", "-d", "az-rust", "--file", f.name, "--name", "rust/up.bin", timeout=120)
    got = notifications(1)
    assert got[0]["blobName"] == "az-rust/rust/up.bin" and got[0]["blobSizeInBytes"] == len(data), got
    assert stored("az-rust/rust/up.bin") == data


finish()
