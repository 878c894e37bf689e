"""Benchmark peer: telemetry throughput of the official Python device SDK (azure-iot-device v2),
or of this project's Python package with the same API (PY_SDK=azure_iot_rs).

    python py_sdk.py sync N           one message at a time, each awaited (blocking client)
    python py_sdk.py async N [BATCH]  asyncio client, BATCH sends kept in flight (default 100)

Environment: CS (device connection string), CA_FILE (PEM of the hub's CA), T0_NS (optional:
the epoch nanoseconds at which the harness started this process, so that import_ms and
connect_ms count the interpreter's start-up too), PY_SDK (optional: `azure-iot-device`, the
official SDK, by default; `azure_iot_rs` for this project's Python package — the driver is then
the same but for its import lines, which is how the package is meant to be adopted).

Each message is what bench_telemetry and rustraw send: a 100-byte body (the index in 8 digits,
then 'x' padding) with the application properties prop1=value1 and prop2=value2, QoS 1.
The SDK always dials port 8883 of the connection string's host.

Prints one line on stdout, as the other peers do and bench/device.sh reads it:
    RESULT {"client": ..., "mode": ..., "n": ..., "batch": ..., "import_ms": ...,
            "connect_ms": ..., "send_s": ..., "msgs_per_s": ..., "send_cpu_s": ...,
            "peak_rss_kib": ...}
On any failure: the error on stderr, exit status 1, no RESULT line.
"""

import asyncio
import json
import os
import resource
import sys
import time

START_NS = int(os.environ.get("T0_NS") or time.time_ns())
#: Which SDK the import lines below load (the only lines that differ between the two).
PY_SDK = os.environ.get("PY_SDK") or "azure-iot-device"
if PY_SDK not in ("azure-iot-device", "azure_iot_rs"):
    sys.exit(f"PY_SDK must be azure-iot-device or azure_iot_rs, not {PY_SDK!r}")
RUST = PY_SDK == "azure_iot_rs"


def usage():
    """CPU seconds (user + system, every thread) and peak resident memory in KiB so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def since_start_ms(ns):
    return round((ns - START_NS) / 1e6, 1)


def telemetry(message_type, index):
    message = message_type(f"{index:08d}".ljust(100, "x"))
    message.custom_properties["prop1"] = "value1"
    message.custom_properties["prop2"] = "value2"
    return message


def credentials():
    with open(os.environ["CA_FILE"], encoding="utf-8") as f:
        return os.environ["CS"], f.read()


def sync_mode(n):
    """Sends n messages with the blocking client; send_message returns on the PUBACK."""
    if RUST:
        from azure_iot_rs import IoTHubDeviceClient, Message
    else:
        from azure.iot.device import IoTHubDeviceClient, Message

    imported = time.time_ns()
    cs, ca = credentials()
    client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=ca)
    try:
        client.connect()
        connected = time.time_ns()
        cpu0, _ = usage()
        t0 = time.perf_counter()
        for index in range(n):
            client.send_message(telemetry(Message, index))
        elapsed = time.perf_counter() - t0
        cpu1, _ = usage()
    finally:
        client.shutdown()
    return imported, connected, elapsed, cpu1 - cpu0


def async_mode(n, batch):
    """Sends n messages with the asyncio client, keeping `batch` of them in flight: `batch`
    senders each take the next index as soon as their previous message is acknowledged (a
    sliding window, like bench_telemetry's `conc`, not batches that wait for their slowest)."""
    if RUST:
        from azure_iot_rs import Message
        from azure_iot_rs.aio import IoTHubDeviceClient
    else:
        from azure.iot.device import Message
        from azure.iot.device.aio import IoTHubDeviceClient

    imported = time.time_ns()

    async def main():
        cs, ca = credentials()
        client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=ca)
        try:
            await client.connect()
            connected = time.time_ns()
            indices = iter(range(n))

            async def sender():
                for index in indices:  # one shared iterator: each index is sent once
                    await client.send_message(telemetry(Message, index))

            cpu0, _ = usage()
            t0 = time.perf_counter()
            await asyncio.gather(*(sender() for _ in range(min(batch, n))))
            elapsed = time.perf_counter() - t0
            cpu1, _ = usage()
        finally:
            await client.shutdown()
        return connected, elapsed, cpu1 - cpu0

    connected, elapsed, cpu = asyncio.run(main())
    return imported, connected, elapsed, cpu


def main(argv):
    if len(argv) < 2 or argv[0] not in ("sync", "async"):
        sys.exit("usage: py_sdk.py sync N | async N [BATCH]")
    mode, n = argv[0], int(argv[1])
    batch = int(argv[2]) if mode == "async" and len(argv) > 2 else 100
    if n < 1 or batch < 1:
        sys.exit("N and BATCH must be at least 1")
    if mode == "sync":
        imported, connected, elapsed, cpu = sync_mode(n)
        batch = 1
    else:
        imported, connected, elapsed, cpu = async_mode(n, batch)
    if RUST:
        from azure_iot_rs import __version__ as VERSION
    else:
        from azure.iot.device.constant import VERSION

    _, peak_rss_kib = usage()
    result = {
        "client": f"{PY_SDK} (Python) {VERSION}",
        "mode": mode,
        "n": n,
        "batch": batch,
        "import_ms": since_start_ms(imported),
        "connect_ms": since_start_ms(connected),
        "send_s": round(elapsed, 4),
        "msgs_per_s": round(n / elapsed, 1),
        "send_cpu_s": round(cpu, 3),
        "peak_rss_kib": peak_rss_kib,
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # one line, not the SDK's chained tracebacks
        print(f"py_sdk.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
