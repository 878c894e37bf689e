"""Benchmark peer: registry throughput of the official Python service SDK (azure-iot-hub 2.x),
or of this project's Python package with the same API (PY_SDK=azure_iot_rs).

    python py_service.py N    creates N devices one after the other, then reads their N twins
                              one after the other, then deletes them (not timed)

Environment: CS (an iothubowner connection string), PY_SDK (optional: `azure-iot-hub`, the
official SDK, by default; `azure_iot_rs` for this project's package — the driver is then the
same but for its import lines), T0_NS (optional, as in py_sdk.py). The hub's CA is trusted
through REQUESTS_CA_BUNDLE, which both SDKs read; both dial the hub's port 443.

Prints one line on stdout:
    RESULT {"client": ..., "n": ..., "import_ms": ..., "create_s": ..., "creates_per_s": ...,
            "twin_s": ..., "twins_per_s": ..., "cpu_s": ..., "peak_rss_kib": ...}
On any failure: the error on stderr, exit status 1, no RESULT line.
"""

import base64
import json
import os
import resource
import sys
import time
import uuid

START_NS = int(os.environ.get("T0_NS") or time.time_ns())
#: Which SDK the import lines below load (the only lines that differ between the two).
PY_SDK = os.environ.get("PY_SDK") or "azure-iot-hub"
if PY_SDK not in ("azure-iot-hub", "azure_iot_rs"):
    sys.exit(f"PY_SDK must be azure-iot-hub or azure_iot_rs, not {PY_SDK!r}")
RUST = PY_SDK == "azure_iot_rs"


def usage():
    """CPU seconds (user + system, every thread) and peak resident memory in KiB so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def new_key():
    return base64.b64encode(os.urandom(32)).decode()


def main(argv):
    if len(argv) != 1 or int(argv[0]) < 1:
        sys.exit("usage: py_service.py N")
    n = int(argv[0])
    if RUST:
        from azure_iot_rs import __version__ as version
        from azure_iot_rs.hub import IoTHubRegistryManager
    else:
        from azure.iot.hub import IoTHubRegistryManager
        from azure.iot.hub.constant import VERSION as version
    imported = time.time_ns()

    registry = IoTHubRegistryManager.from_connection_string(os.environ["CS"])
    prefix = "bench-svc-" + uuid.uuid4().hex[:8] + "-"
    ids = [f"{prefix}{i:05d}" for i in range(n)]
    cpu0, _ = usage()
    t0 = time.perf_counter()
    for device_id in ids:
        registry.create_device_with_sas(device_id, new_key(), new_key(), "enabled")
    t1 = time.perf_counter()
    for device_id in ids:
        twin = registry.get_twin(device_id)
        if twin.device_id != device_id:
            raise RuntimeError(f"get_twin({device_id}) answered the twin of {twin.device_id}")
    t2 = time.perf_counter()
    cpu1, _ = usage()
    for device_id in ids:
        registry.delete_device(device_id)
    _, peak_rss_kib = usage()
    print("RESULT " + json.dumps({
        "client": f"{PY_SDK} (Python) {version}",
        "n": n,
        "import_ms": round((imported - START_NS) / 1e6, 1),
        "create_s": round(t1 - t0, 4),
        "creates_per_s": round(n / (t1 - t0), 1),
        "twin_s": round(t2 - t1, 4),
        "twins_per_s": round(n / (t2 - t1), 1),
        "cpu_s": round(cpu1 - cpu0, 3),
        "peak_rss_kib": peak_rss_kib,
    }), flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # one line, not the SDK's chained tracebacks
        print(f"py_service.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
