"""Benchmark peer: the official Python SDKs' file-upload flow for one file, as the SDK's
samples do it: azure-iot-device's get_storage_info_for_blob, azure-storage-blob's
BlobClient.from_blob_url(...).upload_blob(file) with the library's defaults (4 MiB blocks, one
at a time), notify_blob_upload_status.

    python py_upload.py FILE BLOB_NAME

Environment: CS (device connection string), CA_FILE (PEM of the hub's CA; requests, which
azure-storage-blob uses, is given it through REQUESTS_CA_BUNDLE by bench/upload.sh).
Prints one line on stdout:
    RESULT {"client": "python", "bytes": ..., "upload_s": ..., "mib_per_s": ..., "peak_rss_kib": ...}
where upload_s runs from get_storage_info_for_blob to the notification's answer (the client's
connection is made before). On any failure: the error on stderr, exit status 1.
"""

import json
import os
import resource
import sys
import time

from azure.iot.device import IoTHubDeviceClient
from azure.storage.blob import BlobClient


def main(path, name):
    size = os.path.getsize(path)
    client = IoTHubDeviceClient.create_from_connection_string(
        os.environ["CS"], server_verification_cert=open(os.environ["CA_FILE"]).read())
    client.connect()
    try:
        t0 = time.monotonic()
        info = client.get_storage_info_for_blob(name)
        url = f"https://{info['hostName']}/{info['containerName']}/{info['blobName']}{info['sasToken']}"
        with open(path, "rb") as data:
            BlobClient.from_blob_url(url).upload_blob(data, length=size, overwrite=True)
        client.notify_blob_upload_status(info["correlationId"], True, 201, "OK")
        elapsed = time.monotonic() - t0
    finally:
        client.shutdown()
    print("RESULT " + json.dumps({
        "client": "python", "bytes": size, "upload_s": round(elapsed, 3),
        "mib_per_s": round(size / elapsed / 2**20, 1),
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
