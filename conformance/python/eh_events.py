"""The official Event Hubs SDK for Python (azure-eventhub, EventHubConsumerClient) reads the hub's
own notifications from the emulator's built-in Event Hubs-compatible endpoint: twin change,
device lifecycle and connection-state events caused by the official azure-iot-hub
(IoTHubRegistryManager) and azure-iot-device (IoTHubDeviceClient, MQTT) SDKs — as a back end
reads them from an IoT hub whose routes send those sources to the built-in endpoint.

Run by ../run.sh in a pass of its own whose emulator routes every source
(`hub start --route-events all`), with HUB_JSON and DATA_DIR set. Ends with
"N passed, M failed"; exit status 0 only if nothing failed.
"""

import json
import os
import threading
import uuid

import hub_events
from harness import check, defaults, finish

from azure.eventhub import EventHubConsumerClient
from azure.iot.device import IoTHubDeviceClient
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import Twin, TwinProperties

defaults(client="Python azure-eventhub", transport="AMQP")
HUB = json.load(open(os.environ["HUB_JSON"]))
DATA_DIR = os.environ["DATA_DIR"]
CA_PATH = os.path.join(DATA_DIR, "ca.pem")
CA = open(CA_PATH).read()
RM = IoTHubRegistryManager.from_connection_string(HUB["connection_strings"]["iothubowner"])
EH = HUB["event_hubs"]
HUB_NAME = EH["entity_path"]
SUFFIX = uuid.uuid4().hex[:8]
DEVICE = f"eh-events-dev-{SUFFIX}"
MODULE = "eh-events-mod"


def cause_events():
    """Every operation once; returns how many notifications they cause."""
    d = RM.create_device_with_sas(DEVICE, "", "", "enabled")  # lifecycle: create device
    RM.create_module_with_sas(DEVICE, MODULE, None, "", "")  # lifecycle: create module
    key = d.authentication.symmetric_key.primary_key
    cs = f"HostName={HUB['hostname']};DeviceId={DEVICE};SharedAccessKey={key}"
    client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=CA)
    client.connect()  # connection state: connected
    client.patch_twin_reported_properties({"temp": 21})  # twin change: reported
    RM.update_twin(DEVICE, Twin(tags={"site": "a"}, properties=TwinProperties(desired={"speed": 5})), "*")
    RM.replace_twin(DEVICE, Twin(properties=TwinProperties(desired={"only": 1})))
    RM.update_module_twin(DEVICE, MODULE, Twin(properties=TwinProperties(desired={"k": "v"})), "*")
    client.shutdown()  # connection state: disconnected
    # The hub notices the end of the connection on its own time: wait for it (as the registry
    # shows it) so that the deletes come after, as they would on a hub.
    for _ in range(100):
        if RM.get_device(DEVICE).connection_state == "Disconnected":
            break
        threading.Event().wait(0.1)
    RM.delete_module(DEVICE, MODULE)  # lifecycle: delete module
    RM.delete_device(DEVICE)  # lifecycle: delete device
    return 10


def read_device_events(count, timeout=30):
    """The first `count` events of DEVICE, from the start of every partition, in the order the
    hub enqueued them; all in one partition."""
    pairs = hub_events.received(DEVICE, count, timeout=timeout, with_partitions=True)
    assert len(pairs) >= count, f"{len(pairs)} of {count} events within {timeout} s"
    partitions = {p for p, _ in pairs}
    assert len(partitions) == 1, f"one device's events in partitions {partitions}"
    return [e for _, e in pairs]


def app(event, name):
    value = event.properties.get(name.encode())
    return value.decode() if isinstance(value, bytes) else value


EXPECTED = cause_events()
EVENTS = read_device_events(EXPECTED)


def of(source):
    return [e for e in EVENTS if e.system_properties[b"iothub-message-source"] == source.encode()]


def common(event, schema, module=None):
    """The properties IoT Hub stamps on every notification."""
    s = event.system_properties
    assert s[b"content-type"] == b"application/json", s
    assert s[b"content-encoding"] == b"utf-8", s
    assert s[b"user-id"] == HUB_NAME.encode(), s
    assert s[b"correlation-id"], s
    assert isinstance(s[b"iothub-enqueuedtime"], int), s
    assert app(event, "hubName") == HUB_NAME, event.properties
    assert app(event, "deviceId") == DEVICE, event.properties
    assert app(event, "iothub-message-schema") == schema, event.properties
    assert app(event, "operationTimestamp"), event.properties
    if module is None:
        assert b"moduleId" not in event.properties, event.properties
        assert b"iothub-connection-module-id" not in s, s
    else:
        assert app(event, "moduleId") == module, event.properties
        assert s[b"iothub-connection-module-id"] == module.encode(), s
    assert b"iothub-connection-auth-method" not in s, s


@check("Event Hubs endpoint: routed events, one per operation, all in the device's partition")
def one_per_operation():
    assert len(EVENTS) == EXPECTED, [e.body_as_str() for e in EVENTS]
    sources = sorted({e.system_properties[b"iothub-message-source"] for e in EVENTS})
    assert sources == [b"deviceConnectionStateEvents", b"deviceLifecycleEvents", b"twinChangeEvents"], sources


@check("Event Hubs endpoint: device lifecycle events (deviceLifecycleEvents)")
def lifecycle():
    events = of("deviceLifecycleEvents")
    ops = [(app(e, "opType"), app(e, "moduleId")) for e in events]
    assert ops == [("createDeviceIdentity", None), ("createDeviceIdentity", MODULE),
                   ("deleteDeviceIdentity", MODULE), ("deleteDeviceIdentity", None)], ops
    for e in events:
        module = app(e, "moduleId")
        common(e, "deviceLifecycleNotification", module)
        twin = json.loads(e.body_as_str())
        assert twin["deviceId"] == DEVICE and twin.get("moduleId") == module, twin
        assert twin["etag"] and isinstance(twin["version"], int), twin
        assert "$version" in twin["properties"]["desired"], twin


@check("Event Hubs endpoint: twin change events (twinChangeEvents)")
def twin_change():
    events = of("twinChangeEvents")
    ops = [(app(e, "opType"), app(e, "moduleId")) for e in events]
    assert ops == [("updateTwin", None), ("updateTwin", None), ("replaceTwin", None), ("updateTwin", MODULE)], ops
    for e in events:
        common(e, "twinChangeNotification", app(e, "moduleId"))
    reported, desired, replaced, module = (json.loads(e.body_as_str()) for e in events)
    assert reported["properties"]["reported"]["temp"] == 21, reported
    assert "$metadata" in reported["properties"]["reported"], reported
    assert desired["tags"] == {"site": "a"}, desired
    assert desired["properties"]["desired"]["speed"] == 5, desired
    assert desired["version"] > reported["version"], (desired, reported)
    assert replaced["deviceId"] == DEVICE, replaced
    assert replaced["properties"]["desired"]["only"] == 1 and "speed" not in replaced["properties"]["desired"], replaced
    assert module["properties"]["desired"]["k"] == "v", module


@check("Event Hubs endpoint: connection state events (deviceConnectionStateEvents)")
def connection_state():
    events = of("deviceConnectionStateEvents")
    ops = [app(e, "opType") for e in events]
    assert ops == ["deviceConnected", "deviceDisconnected"], ops
    numbers = []
    for e in events:
        common(e, "deviceConnectionStateNotification")
        body = json.loads(e.body_as_str())
        numbers.append(body["sequenceNumber"])
    assert all(len(n) == 64 for n in numbers) and numbers[0] < numbers[1], numbers



@check("Event Hubs endpoint: last enqueued event properties (track_last_enqueued_event_properties)")
def last_enqueued():
    client = EventHubConsumerClient.from_connection_string(
        EH["connection_string"], consumer_group="$Default", connection_verify=CA_PATH
    )
    seen = []
    done = threading.Event()

    def on_event(ctx, event):
        if event is not None and not done.is_set():
            seen.append((ctx.partition_id, ctx.last_enqueued_event_properties))
            done.set()

    worker = threading.Thread(target=client.receive, kwargs=dict(
        on_event=on_event, starting_position="-1", track_last_enqueued_event_properties=True, max_wait_time=1))
    worker.start()
    done.wait(30)
    client.close()
    worker.join(10)
    assert seen, "no event within 30 s"
    partition_id, last = seen[0]
    # Nothing is enqueued any more: the partition's properties are what the events carried.
    with EventHubConsumerClient.from_connection_string(
        EH["connection_string"], consumer_group="$Default", connection_verify=CA_PATH
    ) as other:
        partition = other.get_partition_properties(partition_id)
    assert last["sequence_number"] == partition["last_enqueued_sequence_number"], (last, partition)
    assert last["offset"] == partition["last_enqueued_offset"], (last, partition)
    assert last["enqueued_time"] == partition["last_enqueued_time_utc"], (last, partition)
    assert last["retrieval_time"] is not None, last


finish()
