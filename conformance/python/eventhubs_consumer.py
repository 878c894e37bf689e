"""The official Event Hubs SDK for Python (azure-eventhub, EventHubConsumerClient) reads the
telemetry the official device SDK (azure-iot-device, MQTT and MQTT over WebSockets) sent,
through the emulator's built-in Event Hubs-compatible endpoint, with the connection string
hub.json announces (event_hubs.connection_string) — as a back end reads an IoT hub's telemetry.

Run by ../run.sh with HUB_JSON and DATA_DIR set. Ends with "N passed, M failed"; exit status 0
only if nothing failed.
"""

import json
import os
import threading
from datetime import datetime, timedelta, timezone

from harness import check, defaults, finish, skip
from hub_events import CA_PATH, EH, consumer, read

from azure.eventhub import EventHubConsumerClient, TransportType
from azure.iot.device import IoTHubDeviceClient, Message
from azure.iot.hub import IoTHubRegistryManager

defaults(client="Python azure-eventhub", transport="AMQP")
HUB = json.load(open(os.environ["HUB_JSON"]))
CA = open(CA_PATH).read()
RM = IoTHubRegistryManager.from_connection_string(HUB["connection_strings"]["iothubowner"])
DEVICE = "eh-consumer-dev"


def send_telemetry(device_id, count, websockets=False, tag="a"):
    """Sends `count` messages with every property the device SDK sets; returns the time just
    before the first."""
    try:
        d = RM.create_device_with_sas(device_id, "", "", "enabled")
    except Exception:  # noqa: BLE001 - already registered by an earlier check
        d = RM.get_device(device_id)
    key = d.authentication.symmetric_key.primary_key
    cs = f"HostName={HUB['hostname']};DeviceId={device_id};SharedAccessKey={key}"
    client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=CA, websockets=websockets)
    client.connect()
    before = datetime.now(timezone.utc) - timedelta(milliseconds=5)
    for n in range(count):
        m = Message(json.dumps({"n": n, "tag": tag}), message_id=f"{tag}-{n}", content_encoding="utf-8",
                    content_type="application/json")
        m.correlation_id = f"corr-{tag}"
        m.custom_properties["n"] = str(n)
        m.custom_properties["tag"] = tag
        client.send_message(m)
    client.shutdown()
    return before


def newest_partition():
    """The partition whose last enqueued event is the newest (the one just sent to) and that
    event's sequence number. Other scenarios' devices may share the partition."""
    client = consumer()
    try:
        best = None
        for p in client.get_partition_ids():
            props = client.get_partition_properties(p)
            if not props["is_empty"] and (best is None or props["last_enqueued_time_utc"] > best[2]):
                best = (p, props["last_enqueued_sequence_number"], props["last_enqueued_time_utc"])
        return best[0], best[1]
    finally:
        client.close()


START = send_telemetry(DEVICE, 3)
PARTITION, LAST = newest_partition()
FIRST = LAST - 2  # the sequence number of the first of the three


@check("Event Hubs endpoint: entity and partition properties ($management)")
def entity_and_partitions():
    client = consumer()
    try:
        props = client.get_eventhub_properties()
        assert props["eventhub_name"] == EH["entity_path"], props
        assert props["partition_ids"] == [str(p) for p in range(EH["partitions"])], props
        p = client.get_partition_properties(PARTITION)
        assert p["id"] == PARTITION and not p["is_empty"], p
        assert p["last_enqueued_sequence_number"] == LAST, p
        assert int(p["last_enqueued_offset"]) >= 0, p
    finally:
        client.close()


@check("Event Hubs endpoint: read device telemetry from the start, with every property and annotation")
def from_start():
    everything = read(consumer(), PARTITION, LAST + 1, "-1")
    assert everything[0].sequence_number == 0, everything[0].sequence_number
    events = [e for e in everything if e.sequence_number >= FIRST]
    assert all(e.system_properties[b"iothub-connection-device-id"] == DEVICE.encode() for e in events)
    assert len(events) == 3, events
    for n, e in enumerate(events):
        body = json.loads(e.body_as_str())
        assert body == {"n": n, "tag": "a"}, body
        assert e.properties == {b"n": str(n).encode(), b"tag": b"a"}, e.properties
        s = e.system_properties
        assert s[b"message-id"] == f"a-{n}".encode(), s
        assert s[b"correlation-id"] == b"corr-a", s
        assert s[b"content-type"] == b"application/json", s
        assert s[b"content-encoding"] == b"utf-8", s
        assert s[b"iothub-message-source"] == b"Telemetry", s
        auth = json.loads(s[b"iothub-connection-auth-method"])
        assert auth["scope"] == "device" and auth["type"] == "sas", auth
        assert s[b"iothub-connection-auth-generation-id"], s
        assert isinstance(s[b"iothub-enqueuedtime"], int), s
        # The SDK's own parse of x-opt-sequence-number (long), x-opt-offset (string) and
        # x-opt-enqueued-time (timestamp).
        assert e.sequence_number == FIRST + n, e.sequence_number
        assert int(e.offset) >= 0, e.offset
        assert abs(e.enqueued_time - START) < timedelta(minutes=1), e.enqueued_time
    offsets = [int(e.offset) for e in events]
    assert offsets == sorted(offsets) and len(set(offsets)) == 3, offsets


@check("Event Hubs endpoint: read from a sequence number (inclusive and not)")
def from_sequence_number():
    inclusive = read(consumer(), PARTITION, 2, FIRST + 1, inclusive=True)
    assert [e.sequence_number for e in inclusive] == [FIRST + 1, LAST], [e.sequence_number for e in inclusive]
    assert json.loads(inclusive[0].body_as_str()) == {"n": 1, "tag": "a"}
    exclusive = read(consumer(), PARTITION, 1, FIRST + 1)
    assert exclusive[0].sequence_number == LAST, exclusive[0].sequence_number


@check("Event Hubs endpoint: read from an enqueued time")
def from_enqueued_time():
    after = send_telemetry(DEVICE, 1, tag="b")
    events = read(consumer(), PARTITION, 1, after)
    assert json.loads(events[0].body_as_str())["tag"] == "b", events[0].body_as_str()
    assert events[0].sequence_number == LAST + 1, events[0].sequence_number


@check("Event Hubs endpoint: live tail from the end of the stream", scenario="Event Hubs endpoint: live tail from the end of the stream")
def live_tail():
    client = consumer()
    events = []
    done = threading.Event()

    def on_event(ctx, event):
        if event is not None:
            events.append(event)
            done.set()

    worker = threading.Thread(target=client.receive, kwargs=dict(
        on_event=on_event, partition_id=PARTITION, starting_position="@latest", max_wait_time=1))
    worker.start()
    # "@latest" is wherever the stream ends when the receiver attaches, which this thread cannot
    # observe: send live events until one arrives (each waits up to 1 s) instead of guessing
    # how long attaching takes. Whatever arrives must be one of them, never an older event.
    for _ in range(20):
        send_telemetry(DEVICE, 1, tag="live")
        if done.wait(1):
            break
    client.close()
    worker.join(10)
    assert events and json.loads(events[0].body_as_str())["tag"] == "live", [e.body_as_str() for e in events]


@check("Event Hubs endpoint: read device telemetry from the start, with every property and annotation",
       transport="AMQP-WS")
def over_websockets():
    client = consumer(transport_type=TransportType.AmqpOverWebsocket)
    props = client.get_eventhub_properties()
    assert len(props["partition_ids"]) == EH["partitions"], props
    events = read(client, PARTITION, 2, FIRST, inclusive=True)
    assert [e.sequence_number for e in events] == [FIRST, FIRST + 1], [e.sequence_number for e in events]
    assert events[0].system_properties[b"iothub-connection-device-id"] == DEVICE.encode()


@check("Event Hubs endpoint: unknown partition and consumer group are Event Hubs errors")
def bad_input():
    client = EventHubConsumerClient.from_connection_string(
        EH["connection_string"], consumer_group="nope", connection_verify=CA_PATH, retry_total=0)
    errors = []

    def on_error(ctx, error):
        errors.append(error)
        threading.Thread(target=client.close).start()

    worker = threading.Thread(target=client.receive, kwargs=dict(
        on_event=lambda ctx, e: None, on_error=on_error, partition_id="0", starting_position="-1"))
    worker.start()
    worker.join(30)
    client.close()
    assert errors and "could not be found" in str(errors[0]), errors
    try:
        consumer(retry_total=0).get_partition_properties("99")
        raise AssertionError("an unknown partition was answered")
    except Exception as e:  # noqa: BLE001 - the SDK's error type is the point of the check
        # pyamqp reads the description from `statusDescription`, not the `status-description`
        # Event Hubs sends, so only the status reaches the error.
        assert "404" in str(e) and "NotFound" in str(e), e


finish()
