"""The official Python provisioning client (azure-iot-device's ProvisioningDeviceClient, over
MQTT and MQTT over WebSockets) against the emulator's Device Provisioning Service.

Each check creates its enrollment through the DPS service REST API (a SAS token made from the
DPS service connection string in hub.json), registers with the SDK, checks the assignment
(hub, device id, substatus), then connects the SDK's IoTHubDeviceClient to the assigned hub
with the same credential and sends one message that the official Event Hubs SDK must read
from the hub's Event Hubs-compatible endpoint (hub_events.py).

Run by ../run.sh with HUB_JSON and DATA_DIR set and REQUESTS_CA_BUNDLE naming
the emulator's CA; with CONFORMANCE_PY_SDK=azure_iot_rs it runs unchanged against this project's
package (its ProvisioningDeviceClient and IoTHubDeviceClient). Ends with "N passed, M failed".
"""

import base64
import hashlib
import hmac
import json
import os
import tempfile
import time
import urllib.parse

from harness import SWAPPED, check, defaults, finish
from hub_events import body, positions, received

import requests
from azure.iot.device import IoTHubDeviceClient, ProvisioningDeviceClient, X509

import certs

defaults(client="Python SDKs", transport="MQTT")
HUB = json.load(open(os.environ["HUB_JSON"]))
DATA_DIR = os.environ["DATA_DIR"]
CA = open(os.path.join(DATA_DIR, "ca.pem")).read()
WORK = tempfile.mkdtemp()


def dps_settings():
    """The DPS entries of hub.json: the device endpoint's host (the SDKs dial their own ports),
    the id scope, the service connection string."""
    dps = HUB["dps"]
    return dps["global_endpoint"].rsplit(":", 1)[0], dps["id_scope"], dps["connection_string"]


DPS_HOST, ID_SCOPE, DPS_CONNECTION_STRING = dps_settings()


class DpsService:
    """The DPS service REST API, called as its documentation describes it (dps-service.md)."""

    def __init__(self, connection_string):
        parts = dict(p.split("=", 1) for p in connection_string.split(";"))
        self.host, self.policy, self.key = parts["HostName"], parts["SharedAccessKeyName"], parts["SharedAccessKey"]

    def _token(self):
        sr = urllib.parse.quote(self.host, safe="")
        se = str(int(time.time()) + 3600)
        digest = hmac.new(base64.b64decode(self.key), f"{sr}\n{se}".encode(), hashlib.sha256).digest()
        sig = urllib.parse.quote(base64.b64encode(digest).decode(), safe="")
        return f"SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn={self.policy}"

    def call(self, method, path, body=None):
        response = requests.request(
            method, f"https://{self.host}{path}?api-version=2021-10-01", json=body, timeout=15,
            headers={"Authorization": self._token(), "Accept": "application/json"},
        )
        if response.status_code >= 300:
            raise AssertionError(f"{method} {path} answered {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def enrollment(self, registration_id, attestation, **fields):
        body = {"registrationId": registration_id, "attestation": attestation, **fields}
        return self.call("PUT", f"/enrollments/{registration_id}", body)

    def group(self, group_id, attestation, **fields):
        body = {"enrollmentGroupId": group_id, "attestation": attestation, **fields}
        return self.call("PUT", f"/enrollmentGroups/{group_id}", body)


SERVICE = DpsService(DPS_CONNECTION_STRING)


def new_key():
    return base64.b64encode(os.urandom(32)).decode()


def symmetric_key(primary):
    return {"type": "symmetricKey", "symmetricKey": {"primaryKey": primary, "secondaryKey": new_key()}}


def derived_key(group_key, registration_id):
    """A group member's key: HMAC-SHA256 of its registration id under the group key."""
    digest = hmac.new(base64.b64decode(group_key), registration_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def assert_assigned(result, device_id):
    state = result.registration_state
    assert result.status == "assigned", f"status {result.status}, state {state}"
    assert state.assigned_hub == HUB["hostname"], f"assigned hub {state.assigned_hub}, not {HUB['hostname']}"
    assert state.device_id == device_id, f"device id {state.device_id}, not {device_id}"
    assert state.sub_status == "initialAssignment", f"substatus {state.sub_status}"


def telemetry_seen(client, device_id):
    """Connects `client` (a device client for the assigned hub), sends one message, and reads it
    back as a back end does, through the hub's Event Hubs-compatible endpoint (hub_events.py)."""
    sent = f"provisioned {device_id}"
    since = positions()
    try:
        client.connect()
        client.send_message(sent)
    finally:
        client.shutdown()
    events = received(device_id, 1, since)
    assert [body(e) for e in events] == [sent.encode()], [body(e) for e in events]


def register_symmetric(registration_id, key, websockets, payload=None):
    client = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=DPS_HOST, registration_id=registration_id, id_scope=ID_SCOPE, symmetric_key=key,
        server_verification_cert=CA, websockets=websockets,
    )
    if payload is not None:
        client.provisioning_payload = payload
    return client.register()


def symmetric_individual(suffix, websockets):
    rid = f"pydps-sk-{suffix}"
    key = new_key()
    SERVICE.enrollment(rid, symmetric_key(key))
    result = register_symmetric(rid, key, websockets)
    assert_assigned(result, rid)
    state = result.registration_state
    telemetry_seen(IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=key, hostname=state.assigned_hub, device_id=state.device_id,
        server_verification_cert=CA, websockets=websockets), state.device_id)


def symmetric_group(suffix, websockets):
    group_key = new_key()
    SERVICE.group(f"pydps-group-{suffix}", symmetric_key(group_key))
    rid = f"pydps-member-{suffix}"
    key = derived_key(group_key, rid)
    result = register_symmetric(rid, key, websockets)
    assert_assigned(result, rid)
    state = result.registration_state
    telemetry_seen(IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=key, hostname=state.assigned_hub, device_id=state.device_id,
        server_verification_cert=CA, websockets=websockets), state.device_id)


def x509_individual(suffix, websockets):
    rid = f"pydps-x509-{suffix}"
    files = certs.self_signed(rid, WORK)
    SERVICE.enrollment(rid, {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": files["pem"]}}}})
    client = ProvisioningDeviceClient.create_from_x509_certificate(
        provisioning_host=DPS_HOST, registration_id=rid, id_scope=ID_SCOPE,
        x509=X509(cert_file=files["cert"], key_file=files["key"]), server_verification_cert=CA, websockets=websockets,
    )
    result = client.register()
    assert_assigned(result, rid)
    state = result.registration_state
    telemetry_seen(IoTHubDeviceClient.create_from_x509_certificate(
        x509=X509(cert_file=files["cert"], key_file=files["key"]), hostname=state.assigned_hub,
        device_id=state.device_id, server_verification_cert=CA, websockets=websockets), state.device_id)


class AllocationWebhook:
    """A custom allocation webhook on plain http://127.0.0.1 (the emulator accepts local http
    webhooks): it records each AllocationRequest and answers with the first linked hub, a tag
    for the initial twin and a payload for the device."""

    def __init__(self):
        import http.server
        import threading

        self.requests = []
        webhook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                webhook.requests.append(request)
                answer = json.dumps({
                    "iotHubHostName": request["linkedHubs"][0],
                    "initialTwin": {"tags": {"allocatedBy": "webhook"}},
                    "payload": {"answer": "from the webhook", "echo": request["deviceRuntimeContext"].get("payload")},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/allocate"


def custom_payload(suffix, websockets):
    """The device's payload reaches the custom allocation webhook; the webhook's payload comes
    back in the registration result."""
    rid = f"pydps-payload-{suffix}"
    key = new_key()
    webhook = AllocationWebhook()
    try:
        SERVICE.enrollment(rid, symmetric_key(key), allocationPolicy="custom",
                           customAllocationDefinition={"webhookUrl": webhook.url, "apiVersion": "2021-10-01"})
        sent = {"model": "thermostat", "firmware": "1.2.3"}
        result = register_symmetric(rid, key, websockets, payload=sent)
    finally:
        webhook.server.shutdown()
    assert_assigned(result, rid)
    assert len(webhook.requests) == 1, webhook.requests
    context = webhook.requests[0]["deviceRuntimeContext"]
    assert context["registrationId"] == rid and context["payload"] == sent, context
    assert "individualEnrollment" in webhook.requests[0], list(webhook.requests[0])
    answered = json.loads(result.registration_state.response_payload)
    assert answered == {"answer": "from the webhook", "echo": sent}, answered


def wrong_key():
    rid = "pydps-wrong-key"
    SERVICE.enrollment(rid, symmetric_key(new_key()))
    try:
        register_symmetric(rid, new_key(), websockets=False)
    except Exception as e:  # noqa: BLE001 - the SDK's own exception classes
        assert type(e).__name__ == "CredentialError", f"{type(e).__name__}: {e} (cause {e.__cause__!r})"
    else:
        raise AssertionError("registration with a wrong key succeeded")


def disabled_enrollment():
    rid = "pydps-disabled"
    key = new_key()
    SERVICE.enrollment(rid, symmetric_key(key), provisioningStatus="disabled")
    try:
        result = register_symmetric(rid, key, websockets=False)
    except Exception as e:  # noqa: BLE001 - the SDK's own exception classes
        assert type(e).__name__ == "ClientError", f"{type(e).__name__}: {e} (cause {e.__cause__!r})"
        cause = repr(e.__cause__)
        assert "ServiceError" in cause and "disabled" in cause, f"ClientError caused by {cause}"
    else:
        raise AssertionError(f"registration of a disabled enrollment succeeded: {result}")
    requests_left = SERVICE.call("GET", f"/registrations/{rid}")
    assert requests_left["status"] == "disabled", requests_left


CHECKS = []
for transport, websockets, suffix in (("MQTT", False, "mqtt"), ("MQTT-WS", True, "ws")):
    CHECKS += [
        (f"DPS symmetric key, individual enrollment, over {transport}; telemetry to the assigned hub",
         "DPS: symmetric key, individual", transport, lambda s=suffix, w=websockets: symmetric_individual(s, w)),
        (f"DPS symmetric key, enrollment group (derived key), over {transport}; telemetry to the assigned hub",
         "DPS: symmetric key, group", transport, lambda s=suffix, w=websockets: symmetric_group(s, w)),
        (f"DPS X.509 self-signed, individual enrollment, over {transport}; telemetry to the assigned hub",
         "DPS: X.509, individual", transport, lambda s=suffix, w=websockets: x509_individual(s, w)),
    ]
CHECKS += [
    ("DPS custom payload: device payload to the allocation webhook, its payload back", "DPS: custom payload", "MQTT",
     lambda: custom_payload("mqtt", False)),
    ("DPS wrong key: CredentialError", "DPS: wrong key, disabled enrollment", "MQTT", wrong_key),
    ("DPS disabled enrollment: ClientError from the 'disabled' status", "DPS: wrong key, disabled enrollment", "MQTT",
     disabled_enrollment),
]

for name, scenario, transport, run in CHECKS:
    check(name, scenario=scenario, transport=transport)(run)

finish()
