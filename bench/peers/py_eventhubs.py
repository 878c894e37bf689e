"""The official Event Hubs SDK for Python (azure-eventhub, EventHubConsumerClient) reads every
event of the emulator's Event Hubs-compatible endpoint from the start of every partition
(bench/eventhubs.sh). Usage: py_eventhubs.py HUB_DIR batch|single

`batch` uses receive_batch (max_batch_size 300), `single` the plain receive callback; both read
all partitions with one client (no checkpoint store: the client owns every partition) with
prefetch 300. The number of events to expect is the sum of the partitions' properties, taken
before reading. Prints one RESULT line: events/s from the receive call to the last event, and
the time to the first event.
"""

import json
import os
import sys
import threading
import time

from azure.eventhub import EventHubConsumerClient

hub_dir, mode = sys.argv[1], sys.argv[2]
hub = json.load(open(os.path.join(hub_dir, "hub.json")))
eh = hub["event_hubs"]
# The SDK dials 5671 whatever port the connection string names; the benchmark's emulator is on
# another one, given as the SDK's custom endpoint address.
client = EventHubConsumerClient.from_connection_string(
    eh["connection_string"], consumer_group="$Default", connection_verify=os.path.join(hub_dir, "ca.pem"),
    custom_endpoint_address=f"sb://{hub['hostname']}:{eh['port']}")

expected = 0
for pid in client.get_partition_ids():
    p = client.get_partition_properties(pid)
    if not p["is_empty"]:
        expected += p["last_enqueued_sequence_number"] - p["beginning_sequence_number"] + 1

lock = threading.Lock()
state = {"received": 0, "prop1": 0, "first": None}
done = threading.Event()


def count(events):
    with lock:
        if state["first"] is None and events:
            state["first"] = time.perf_counter()
        state["received"] += len(events)
        state["prop1"] += sum(1 for e in events if b"prop1" in (e.properties or {}))
        if state["received"] >= expected:
            done.set()


if mode == "batch":
    target = client.receive_batch
    kwargs = dict(on_event_batch=lambda ctx, batch: count(batch), max_batch_size=300)
else:
    target = client.receive
    kwargs = dict(on_event=lambda ctx, event: event is not None and count([event]))
started = time.perf_counter()
worker = threading.Thread(target=target, kwargs=dict(starting_position="-1", prefetch=300, **kwargs),
                          daemon=True)
worker.start()
done.wait()
elapsed = time.perf_counter() - started
client.close()
worker.join(30)
print("RESULT " + json.dumps({
    "mode": "eventhubs", "client": f"python azure-eventhub {mode}", "events": state["received"],
    "with_prop1": state["prop1"], "seconds": elapsed, "events_per_sec": state["received"] / elapsed,
    "first_event_ms": (state["first"] - started) * 1000}))
