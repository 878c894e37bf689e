"""What the hub received as telemetry, read the way a back end reads it: through the hub's
built-in Event Hubs-compatible endpoint with the official Event Hubs SDK (azure-eventhub,
EventHubConsumerClient) and the connection string hub.json announces
(event_hubs.connection_string), trusting the emulator's ca.pem.

The whole suite shares one emulator, so reads are targeted and bounded: take `positions()`
before sending, then `received(device_id, count, since=…)` reads every partition after those
positions (or from the start without them), keeps only the events whose
`iothub-connection-device-id` (and module id, if given) match, and returns as soon as `count`
have arrived or the deadline passes — never after a fixed sleep. Each event is the SDK's
`EventData`; `system(event)` and `application(event)` give its properties by name as text.

Used by the scenarios that check what a device SDK sent (device_mqtt.py, dps_device.py) and by
eventhubs_consumer.py, which checks the endpoint itself.
"""

import json
import os
import threading

from azure.eventhub import EventHubConsumerClient

HUB = json.load(open(os.environ["HUB_JSON"]))
EH = HUB["event_hubs"]
CA_PATH = os.path.join(os.environ["DATA_DIR"], "ca.pem")


def consumer(**kwargs):
    """An EventHubConsumerClient of the endpoint in the `$Default` consumer group."""
    return EventHubConsumerClient.from_connection_string(
        EH["connection_string"], consumer_group="$Default", connection_verify=CA_PATH, **kwargs
    )


def read(client, partition, count, starting_position, inclusive=False, timeout=20):
    """`count` events of `partition` from `starting_position`, by the official receive loop;
    closes `client`."""
    events = []
    done = threading.Event()

    def on_event(ctx, event):
        if event is None or done.is_set():
            return
        events.append(event)
        if len(events) >= count:
            done.set()

    worker = threading.Thread(target=client.receive, kwargs=dict(
        on_event=on_event, partition_id=partition, starting_position=starting_position,
        starting_position_inclusive=inclusive, max_wait_time=1))
    worker.start()
    done.wait(timeout)
    client.close()
    worker.join(10)
    assert len(events) >= count, f"{len(events)} of {count} events within {timeout} s"
    return events[:count]


def positions():
    """Each partition's last sequence number now (None for an empty partition): where a read of
    what is sent next starts."""
    client = consumer()
    try:
        out = {}
        for p in client.get_partition_ids():
            props = client.get_partition_properties(p)
            out[p] = None if props["is_empty"] else props["last_enqueued_sequence_number"]
        return out
    finally:
        client.close()


def received(device_id, count, since=None, module_id=None, timeout=20, with_partitions=False):
    """The events from `device_id` (and `module_id`, if given) in every partition after the
    positions `since` (from the start without it), once `count` have arrived or `timeout`
    seconds have passed (then fewer: the caller's assertion says what is missing), in
    sequence-number order; with `with_partitions`, as (partition id, event) pairs."""
    want_device = device_id.encode()
    want_module = module_id.encode() if module_id else None
    start = {p: ("-1" if n is None else n) for p, n in (since or {}).items()} or "-1"
    events = []
    done = threading.Event()
    lock = threading.Lock()

    def on_event(ctx, event):
        if event is None:
            return
        s = event.system_properties
        if s.get(b"iothub-connection-device-id") != want_device:
            return
        if want_module is not None and s.get(b"iothub-connection-module-id") != want_module:
            return
        with lock:
            events.append((ctx.partition_id, event))
            if len(events) >= count:
                done.set()

    client = consumer()
    worker = threading.Thread(target=client.receive, kwargs=dict(
        on_event=on_event, starting_position=start, starting_position_inclusive=False, max_wait_time=1))
    worker.start()
    done.wait(timeout)
    client.close()
    worker.join(10)
    with lock:
        ordered = sorted(events, key=lambda pe: pe[1].sequence_number)  # one device: one partition
    return ordered if with_partitions else [e for _, e in ordered]


def text(value):
    """An AMQP property value as text (the SDK hands strings and symbols over as bytes)."""
    return value.decode() if isinstance(value, bytes) else value


def system(event):
    """The event's properties and annotations (message-id, correlation-id, content-type,
    iothub-connection-device-id, …) by name, as text."""
    return {text(k): text(v) for k, v in event.system_properties.items()}


def application(event):
    """The event's application properties by name, as text."""
    return {text(k): text(v) for k, v in (event.properties or {}).items()}


def expiry_ms(event):
    """The event's absolute-expiry-time (milliseconds since the epoch), or None."""
    return event.raw_amqp_message.properties.absolute_expiry_time



def body(event):
    """The event's body (one data section) as bytes."""
    return b"".join(event.body)
