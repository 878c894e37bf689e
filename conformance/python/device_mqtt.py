"""The official Python device SDK (azure-iot-device over MQTT/TLS) against the emulator.

Run by ../run.sh with HUB_JSON and DATA_DIR set. Identities are created and checked with the
official service SDK (azure-iot-hub). What the hub received as telemetry is read as a back end
reads it: through the built-in Event Hubs-compatible endpoint with the official Event Hubs SDK
(hub_events.py).
Ends with "N passed, M failed"; exit status 0 only if nothing failed.
"""

import json
import os
import threading
from datetime import datetime, timezone

from harness import azure_iot as cli, check, finish
from hub_events import application, body, expiry_ms, positions, received, system
import certifi

# The service SDK's AMQP stack (uamqp) trusts only certifi's bundle (it ignores
# REQUESTS_CA_BUNDLE): point it at the emulator's CA, as a user of the emulator would.
certifi.where = lambda: os.path.join(os.environ["DATA_DIR"], "ca.pem")

from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, Message, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties

HUB = json.load(open(os.environ["HUB_JSON"]))
DATA_DIR = os.environ["DATA_DIR"]
CA = open(os.path.join(DATA_DIR, "ca.pem")).read()
RM = IoTHubRegistryManager.from_connection_string(HUB["connection_strings"]["iothubowner"])
HOST = HUB["hostname"]



def device_client(device_id, websockets=False):
    d = RM.create_device_with_sas(device_id, "", "", "enabled")
    key = d.authentication.symmetric_key.primary_key
    cs = f"HostName={HOST};DeviceId={device_id};SharedAccessKey={key}"
    client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=CA, websockets=websockets)
    client.connect()
    return client


def wait_for(event, what, timeout=10):
    if not event.wait(timeout):
        raise AssertionError(f"timed out waiting for {what}")


@check("telemetry with custom and system properties", scenario="telemetry with properties")
def _():
    client = device_client("pyd-telemetry")
    since = positions()
    m = Message('{"temperature":21.5}', message_id="mid-1", content_encoding="utf-8", content_type="application/json")
    m.correlation_id = "cid-1"
    m.custom_properties["k space"] = "v/slash&amp"
    m.custom_properties["empty"] = ""
    m.expiry_time_utc = datetime(2033, 5, 18, 3, 33, 20, tzinfo=timezone.utc)
    client.send_message(m)  # returns after the PUBACK
    client.send_message("plain")
    client.shutdown()
    events = received("pyd-telemetry", 2, since)
    assert len(events) == 2, f"{len(events)} of 2 events from pyd-telemetry"
    first, s = events[0], system(events[0])
    assert body(first) == b'{"temperature":21.5}', body(first)
    assert s["message-id"] == "mid-1" and s["correlation-id"] == "cid-1", s
    assert s["content-type"] == "application/json" and s["content-encoding"] == "utf-8", s
    assert s["iothub-connection-device-id"] == "pyd-telemetry" and "iothub-connection-module-id" not in s, s
    assert expiry_ms(first) == 2_000_000_000_000, expiry_ms(first)  # 2033-05-18T03:33:20Z
    assert application(first) == {"k space": "v/slash&amp", "empty": ""}, application(first)
    assert body(events[1]) == b"plain", body(events[1])


@check("telemetry and twin over MQTT over WebSockets (port 443)", scenario=["telemetry with properties", "twin: get, desired patch, reported"], transport="MQTT-WS")
def _():
    client = device_client("pyd-ws", websockets=True)
    since = positions()
    client.send_message(Message("over websockets", message_id="ws-1"))
    twin = client.get_twin()
    assert twin["reported"]["$version"] == 1, twin
    client.shutdown()
    events = received("pyd-ws", 1, since)
    assert events and body(events[0]) == b"over websockets", [body(e) for e in events]
    assert system(events[0])["message-id"] == "ws-1", system(events[0])


@check("module output message", scenario="module: output, twin, method")
def _():
    RM.create_device_with_sas("pyd-edge", "", "", "enabled")
    m = RM.create_module_with_sas("pyd-edge", "filter", None, "", "")
    key = m.authentication.symmetric_key.primary_key
    cs = f"HostName={HOST};DeviceId=pyd-edge;ModuleId=filter;SharedAccessKey={key}"
    client = IoTHubModuleClient.create_from_connection_string(cs, server_verification_cert=CA)
    client.connect()
    since = positions()
    m = Message("out")
    m.custom_properties["level"] = "high"
    client.send_message_to_output(m, "out1")
    client.shutdown()
    # The built-in endpoint names the sending module (a system property) and carries the output
    # name as the application property `iothub-outputname` (ADR 24; not verified on a live hub).
    events = received("pyd-edge", 1, since, module_id="filter")
    assert events and body(events[0]) == b"out", [body(e) for e in events]
    s = system(events[0])
    assert s["iothub-connection-module-id"] == "filter", s
    assert json.loads(s["iothub-connection-auth-method"])["scope"] == "module", s
    assert application(events[0]) == {"level": "high", "iothub-outputname": "out1"}, application(events[0])


@check("twin: get, reported patch, desired patch", scenario="twin: get, desired patch, reported")
def _():
    client = device_client("pyd-twin")
    received = []
    got = threading.Event()

    def on_patch(patch):
        received.append(patch)
        got.set()

    client.on_twin_desired_properties_patch_received = on_patch
    twin = client.get_twin()
    assert twin["desired"]["$version"] == 1 and twin["reported"]["$version"] == 1, twin
    client.patch_twin_reported_properties({"temperature": 21.5, "nested": {"a": None}})
    service_twin = RM.get_twin("pyd-twin")
    assert service_twin.properties.reported["temperature"] == 21.5
    RM.update_twin("pyd-twin", Twin(properties=TwinProperties(desired={"fan": True})), "*")
    wait_for(got, "the desired patch")
    assert received[0]["fan"] is True and received[0]["$version"] == 2, received
    client.shutdown()


@check("direct method answered through the SDK's handler", scenario="direct method")
def _():
    client = device_client("pyd-method")

    def on_method(request):
        payload = {"echo": request.payload, "name": request.name}
        client.send_method_response(MethodResponse.create_from_method_request(request, 200, payload))

    client.on_method_request_received = on_method
    # connect_timeout lets the hub wait for the SDK's background SUBSCRIBE, as the real hub does.
    result = RM.invoke_device_method(
        "pyd-method",
        CloudToDeviceMethod(method_name="reboot", payload={"delay": 5}, response_timeout_in_seconds=10, connect_timeout_in_seconds=10),
    )
    assert result.status == 200, result
    assert result.payload == {"echo": {"delay": 5}, "name": "reboot"}, result.payload
    client.shutdown()


@check("cloud-to-device: service SDK over AMQP, device SDK over MQTT", scenario="cloud-to-device and feedback")
def _():
    client = device_client("pyd-c2d")
    received = []
    got = threading.Event()

    def on_message(message):
        received.append(message)
        got.set()

    client.on_message_received = on_message
    # The service SDK sends over AMQP (uamqp, SASL, CBS put-token) to port 5671.
    RM.send_c2d_message("pyd-c2d", "hello device", properties={"color": "blue"})
    wait_for(got, "the cloud-to-device message")
    message = received[0]
    assert message.data == b"hello device", message.data
    assert message.custom_properties.get("color") == "blue", message.custom_properties
    client.shutdown()


@check("cloud-to-device to an unknown device fails in the service SDK", scenario="cloud-to-device to an unknown device refused", transport="AMQP")
def _():
    try:
        RM.send_c2d_message("pyd-nobody", "lost")
    except Exception:  # noqa: BLE001 - the SDK raises a plain Exception for a failed send
        return
    raise AssertionError("sending to an unknown device succeeded")


@check("X.509 self-signed device: thumbprint registered, certificate presented", scenario="X.509 self-signed device")
def _():
    import hashlib, ssl, subprocess, tempfile
    from azure.iot.device import X509

    work = tempfile.mkdtemp()
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=pyd-x509"],
        check=True, capture_output=True,
    )
    der = ssl.PEM_cert_to_DER_cert(open(cert).read())
    thumbprint = hashlib.sha1(der).hexdigest().upper()
    RM.create_device_with_x509("pyd-x509", thumbprint, thumbprint, "enabled")
    client = IoTHubDeviceClient.create_from_x509_certificate(
        x509=X509(cert_file=cert, key_file=key), hostname=HOST, device_id="pyd-x509", server_verification_cert=CA
    )
    client.connect()
    since = positions()
    client.send_message("signed by a certificate")
    client.shutdown()
    events = received("pyd-x509", 1, since)
    assert events and body(events[0]) == b"signed by a certificate", [body(e) for e in events]
    auth = json.loads(system(events[0])["iothub-connection-auth-method"])
    assert auth["type"] == "x509Certificate", auth


@check("a wrong key is refused", scenario="wrong key refused")
def _():
    RM.create_device_with_sas("pyd-refused", "", "", "enabled")
    cs = f"HostName={HOST};DeviceId=pyd-refused;SharedAccessKey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=CA, connection_retry=False)
    try:
        client.connect()
    except Exception as e:  # noqa: BLE001 - the SDK raises its own CredentialError/ConnectionFailedError
        assert "Credential" in type(e).__name__ or "Unauthorized" in type(e).__name__ or "Connection" in type(e).__name__, repr(e)
    else:
        raise AssertionError("connect with a wrong key succeeded")
    finally:
        client.shutdown()



@check("telemetry: properties that need encoding, seen by monitor-events", scenario="telemetry with properties")
def _():
    client = device_client("pyd-encoding")
    m = Message("ünïcödé body", message_id="mid enc/1", content_type="text/plain", content_encoding="utf-8")
    tricky = {"a b": "c d", "slash/key": "x/y", "eq": "1=2", "amp": "a&b", "pct": "50%", "naïve": "çà", "tab": "a+b"}
    for k, v in tricky.items():
        m.custom_properties[k] = v
    client.send_message(m)
    client.shutdown()
    lines = cli("hub", "monitor-events", "--output", "json", "--from-start", "--device-id", "pyd-encoding",
                "--count", "1", "--timeout", "10")
    assert len(lines) == 1, lines
    event = json.loads(lines[0])
    assert event["body"] == "ünïcödé body", event
    assert event["properties"] == tricky, event["properties"]
    system = event["systemProperties"]
    assert system["messageId"] == "mid enc/1" and system["contentType"] == "text/plain", system
    assert system["connectionDeviceId"] == "pyd-encoding", system


@check("module client: twin get, reported and desired patches, direct method", scenario="module: output, twin, method")
def _():
    RM.create_device_with_sas("pyd-edge2", "", "", "enabled")
    m = RM.create_module_with_sas("pyd-edge2", "sensor", None, "", "")
    key = m.authentication.symmetric_key.primary_key
    cs = f"HostName={HOST};DeviceId=pyd-edge2;ModuleId=sensor;SharedAccessKey={key}"
    client = IoTHubModuleClient.create_from_connection_string(cs, server_verification_cert=CA)
    patches = []
    got = threading.Event()

    def on_patch(patch):
        patches.append(patch)
        got.set()

    def on_method(request):
        client.send_method_response(MethodResponse.create_from_method_request(request, 200, {"module": request.name}))

    client.on_twin_desired_properties_patch_received = on_patch
    client.on_method_request_received = on_method
    client.connect()
    twin = client.get_twin()
    assert twin["desired"]["$version"] == 1, twin
    client.patch_twin_reported_properties({"rate": 3})
    assert RM.get_module_twin("pyd-edge2", "sensor").properties.reported["rate"] == 3
    RM.update_module_twin("pyd-edge2", "sensor", Twin(properties=TwinProperties(desired={"mode": "fast"})), "*")
    wait_for(got, "the module's desired patch")
    assert patches[0]["mode"] == "fast", patches
    result = RM.invoke_device_module_method(
        "pyd-edge2", "sensor",
        CloudToDeviceMethod(method_name="status", payload=None, response_timeout_in_seconds=10, connect_timeout_in_seconds=10),
    )
    assert result.status == 200 and result.payload == {"module": "status"}, (result.status, result.payload)
    client.shutdown()


@check("feedback of a C2D message the service SDK sent, read with monitor-feedback", scenario="cloud-to-device and feedback")
def _():
    client = device_client("pyd-feedback")
    got = threading.Event()
    client.on_message_received = lambda message: got.set()
    RM.send_c2d_message("pyd-feedback", "ack me", properties={"iothub-ack": "full", "messageId": "fb-1"})
    wait_for(got, "the cloud-to-device message")
    client.shutdown()
    lines = cli("hub", "monitor-feedback", "--output", "json", "--count", "1", "--timeout", "20")
    records = [json.loads(line) for line in lines]
    ours = [r for r in records if r.get("deviceId") == "pyd-feedback"]
    assert ours and ours[0]["statusCode"] == "Success", records
    assert ours[0]["originalMessageId"] == "fb-1", ours


finish()
