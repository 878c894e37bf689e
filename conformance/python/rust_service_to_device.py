"""This project's service client, through the `azure-iot` command line, against the official
Python device SDK (azure-iot-device over MQTT): the cross pair of service_to_rust_device.py.

Run by ../run.sh with HUB_JSON, DATA_DIR and AZURE_IOT_BIN set. The commands find the
emulator through --data-dir (its hub.json and ca.pem), as a user's would. Ends with
"N passed, M failed"; exit status 0 only if nothing failed.
"""

import json
import os
import subprocess
import threading

from harness import check, defaults, finish

from azure.iot.device import IoTHubDeviceClient, MethodResponse

defaults(client="Rust service → Python device", transport="MQTT")
HUB = json.load(open(os.environ["HUB_JSON"]))
DATA_DIR = os.environ["DATA_DIR"]
CA = open(os.path.join(DATA_DIR, "ca.pem")).read()
DEVICE = "rs-svc-py-dev"


def cli(*args, ok=True, timeout=60):
    done = subprocess.run(
        [os.environ["AZURE_IOT_BIN"], *args, "--data-dir", DATA_DIR],
        capture_output=True, text=True, timeout=timeout,
    )
    if ok and done.returncode != 0:
        raise AssertionError(f"azure-iot {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def wait_for(event, what, timeout=15):
    if not event.wait(timeout):
        raise AssertionError(f"timed out waiting for {what}")


state = {"client": None, "patches": [], "messages": []}
desired_seen = threading.Event()
c2d_seen = threading.Event()


@check("device created and its connection string printed by azure-iot; the Python device connects", scenario="registry CRUD")
def _():
    cli("device", "delete", "-d", DEVICE, ok=False)
    created = json.loads(cli("device", "create", "-d", DEVICE).stdout)
    assert created["deviceId"] == DEVICE and created["authentication"]["type"] == "sas", created
    cs = cli("device", "connection-string", "-d", DEVICE).stdout.strip()
    client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=CA)

    def on_method(request):
        payload = {"echo": request.payload, "name": request.name}
        client.send_method_response(MethodResponse.create_from_method_request(request, 200, payload))

    def on_patch(patch):
        state["patches"].append(patch)
        client.patch_twin_reported_properties({k: v for k, v in patch.items() if not k.startswith("$")})
        desired_seen.set()

    def on_message(message):
        state["messages"].append(message)
        c2d_seen.set()

    client.on_method_request_received = on_method
    client.on_twin_desired_properties_patch_received = on_patch
    client.on_message_received = on_message
    client.connect()
    state["client"] = client
    shown = json.loads(cli("device", "show", "-d", DEVICE).stdout)
    assert shown["connectionState"] == "Connected", shown


@check("direct method invoked by azure-iot, answered by the Python device", scenario="direct method")
def _():
    # --connect-timeout lets the hub wait for the SDK's background SUBSCRIBE.
    done = cli("method", "invoke", "-d", DEVICE, "-n", "reboot", "--payload", '{"delay": 5, "note": "ünï"}',
               "--timeout", "10", "--connect-timeout", "10")
    answer = json.loads(done.stdout)
    assert answer == {"status": 200, "payload": {"echo": {"delay": 5, "note": "ünï"}, "name": "reboot"}}, answer


@check("cloud-to-device sent by azure-iot over AMQP reaches the Python device, with feedback", scenario="cloud-to-device and feedback")
def _():
    done = cli("c2d", "send", "-d", DEVICE, "--data", "hello python", "--message-id", "rs-c2d-1",
               "--correlation-id", "rs-corr", "-p", "color=blue", "-p", "k space=v/slash&amp",
               "--ack", "full", "--wait-feedback", "20")
    wait_for(c2d_seen, "the cloud-to-device message")
    message = state["messages"][0]
    assert message.data == b"hello python", message.data
    assert message.message_id == "rs-c2d-1" and message.correlation_id == "rs-corr", vars(message)
    assert message.custom_properties.get("color") == "blue", message.custom_properties
    assert message.custom_properties.get("k space") == "v/slash&amp", message.custom_properties
    feedback = json.loads(done.stdout)
    assert feedback["originalMessageId"] == "rs-c2d-1" and feedback["statusCode"] == "Success", feedback


@check("desired patch by azure-iot reaches the Python device; its reported patch is seen by azure-iot", scenario="twin: get, desired patch, reported")
def _():
    cli("twin", "update", "-d", DEVICE, "--desired", '{"fan": true, "speed": 3}', "--tags", '{"site": "lab"}')
    wait_for(desired_seen, "the desired patch")
    assert state["patches"][0]["fan"] is True and state["patches"][0]["speed"] == 3, state["patches"]
    twin = state["client"].get_twin()
    assert twin["desired"]["fan"] is True, twin
    for _ in range(100):
        shown = json.loads(cli("twin", "show", "-d", DEVICE).stdout)
        if shown["properties"]["reported"].get("speed") == 3:
            break
    assert shown["properties"]["reported"]["fan"] is True, shown
    assert shown["tags"] == {"site": "lab"}, shown


@check("query by azure-iot finds the device by tag", scenario="query with paging")
def _():
    lines = cli("query", "-q", "SELECT deviceId, tags FROM devices WHERE tags.site = 'lab'", "--page-size", "1").stdout
    rows = [json.loads(line) for line in lines.splitlines() if line.strip()]
    assert rows == [{"deviceId": DEVICE, "tags": {"site": "lab"}}], rows


@check("method on an offline device: azure-iot fails with DeviceNotOnline", scenario="method on an offline device")
def _():
    state["client"].shutdown()
    done = cli("method", "invoke", "-d", DEVICE, "-n", "reboot", ok=False)
    assert done.returncode == 1, done
    assert "DeviceNotOnline" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@check("device deleted by azure-iot", scenario="registry CRUD")
def _():
    cli("device", "delete", "-d", DEVICE)
    done = cli("device", "show", "-d", DEVICE, ok=False)
    assert done.returncode == 1 and "404" in done.stderr, done.stderr


finish()
