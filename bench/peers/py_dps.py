"""Benchmark peer: device provisioning with the official Python client (azure-iot-device v2's
asyncio ProvisioningDeviceClient) against the emulator's DPS, the Python side of bench/dps.sh.

    python py_dps.py N INFLIGHT PREFIX

Registers N members of one symmetric-key enrollment group — registration ids PREFIX-0 …
PREFIX-(N-1), each with its key derived from the group key (HMAC-SHA256 of the registration
id, as DPS documents it) — INFLIGHT at a time: INFLIGHT workers each take the next index as
soon as their previous registration is assigned (the sliding window `iot-bench dps` uses). One
registration is one client's `register()`: connect, subscribe, register, poll until assigned,
disconnect; it is timed from the call to its result.

Environment: DPS_HOST (the DPS device endpoint's host from hub.json, the hub's host name; the
SDK always dials its port 8883),
ID_SCOPE, DPS_GROUP_KEY (the group's primary key, base64), CA_FILE (PEM of the emulator's CA),
HUB_HOSTNAME (the hub every registration must be assigned to).

Prints one line on stdout, as `iot-bench dps` does and bench/dps.sh reads it:
    RESULT {"client": ..., "count": ..., "inflight": ..., "assigned": ..., "failed": ...,
            "seconds": ..., "per_s": ..., "p50_ms": ..., "p99_ms": ..., "max_ms": ...,
            "cpu_s": ..., "peak_rss_kib": ...}
The first failure goes to stderr.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import resource
import sys
import time

from azure.iot.device.aio import ProvisioningDeviceClient

def derived_key(group_key, registration_id):
    """A group member's key: HMAC-SHA256 of its registration id under the group key."""
    digest = hmac.new(base64.b64decode(group_key), registration_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def percentile_ms(latencies, q):
    """The latency at quantile q of sorted latencies (seconds), in milliseconds, as iot-bench
    computes it."""
    if not latencies:
        return 0.0
    return latencies[min(int(len(latencies) * q), len(latencies) - 1)] * 1000.0


async def main(count, inflight, prefix):
    host, scope, group_key = os.environ["DPS_HOST"], os.environ["ID_SCOPE"], os.environ["DPS_GROUP_KEY"]
    hub = os.environ["HUB_HOSTNAME"]
    with open(os.environ["CA_FILE"], encoding="utf-8") as f:
        ca = f.read()
    indices = iter(range(count))
    latencies, failures = [], []

    async def worker():
        for index in indices:  # one shared iterator: each index is registered once
            rid = f"{prefix}-{index}"
            client = ProvisioningDeviceClient.create_from_symmetric_key(
                provisioning_host=host, registration_id=rid, id_scope=scope,
                symmetric_key=derived_key(group_key, rid), server_verification_cert=ca,
            )
            t0 = time.perf_counter()
            try:
                result = await client.register()
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                failures.append(f"{rid}: {type(e).__name__}: {e}")
                continue
            elapsed = time.perf_counter() - t0
            state = result.registration_state
            if result.status == "assigned" and state.device_id == rid and state.assigned_hub == hub:
                latencies.append(elapsed)
            else:
                failures.append(f"{rid}: {result.status}, {state}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, min(inflight, count)))))
    return time.perf_counter() - t0, sorted(latencies), failures


if __name__ == "__main__":
    n, window, id_prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    seconds, done, failed = asyncio.run(main(n, window, id_prefix))
    if failed:
        print(f"{len(failed)} registrations failed; the first: {failed[0]}", file=sys.stderr)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print("RESULT " + json.dumps({
        "bench": "dps", "client": "azure-iot-device", "transport": "mqtt", "count": n, "inflight": window,
        "assigned": len(done), "failed": len(failed), "seconds": seconds, "per_s": len(done) / seconds,
        "p50_ms": percentile_ms(done, 0.5), "p99_ms": percentile_ms(done, 0.99), "max_ms": percentile_ms(done, 1.0),
        "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_kib": usage.ru_maxrss,
    }))
