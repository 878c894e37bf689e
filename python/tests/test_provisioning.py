"""ProvisioningDeviceClient (sync and aio) against the emulator's Device Provisioning Service:
each test creates its enrollment through the DPS service REST API, registers, checks the
assignment and, where it says so, connects an IoTHubDeviceClient with the result and sends a
message the hub must have stored."""

import asyncio
import base64
import hashlib
import hmac
import http.server
import json
import os
import shutil
import socket
import threading
import uuid
from typing import Any, Dict, List

import pytest

from azure_iot_rs import IoTHubDeviceClient, ProvisioningDeviceClient, RegistrationResult, X509
from azure_iot_rs import aio
from azure_iot_rs.exceptions import ClientError, ConnectionFailedError, CredentialError, OperationTimeout, ServiceError
from conftest import self_signed_certificate


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def key_attestation(primary: str) -> Dict[str, Any]:
    return {"type": "symmetricKey", "symmetricKey": {"primaryKey": primary, "secondaryKey": new_key()}}


def derived_key(group_key: str, registration_id: str) -> str:
    digest = hmac.new(base64.b64decode(group_key), registration_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def enroll(hub: Any, registration_id: str, attestation: Dict[str, Any], **fields: Any) -> None:
    body = {"registrationId": registration_id, "attestation": attestation, **fields}
    status, answer = hub.dps_request("PUT", f"/enrollments/{registration_id}", body)
    assert status == 200, (status, answer)


def assert_assigned(hub: Any, result: RegistrationResult, device_id: str) -> None:
    assert isinstance(result, RegistrationResult)
    assert result.status == "assigned", result.status
    assert result.operation_id, "no operation id"
    state = result.registration_state
    assert state is not None
    assert (state.assigned_hub, state.device_id) == (hub.hostname, device_id), str(state)
    assert state.sub_status == "initialAssignment", state.sub_status
    assert state.created_date_time and state.last_update_date_time and state.etag, vars(state)
    assert state.response_payload == "null"


def telemetry_from(hub: Any, client: IoTHubDeviceClient, device_id: str) -> None:
    client.connect()
    client.send_message(f"provisioned {device_id}")
    client.shutdown()
    assert [e["body"] for e in hub.telemetry(device_id, 1)] == [f"provisioned {device_id}"]


def test_individual_key_registers_and_the_device_sends_telemetry(hub):
    rid = "py-dps-sk-" + uuid.uuid4().hex[:8]
    key = new_key()
    enroll(hub, rid, key_attestation(key))
    client = ProvisioningDeviceClient.create_from_symmetric_key(hub.hostname, rid, hub.dps["id_scope"], key,
                                                                **hub.provisioning_kwargs())
    result = client.register()
    assert_assigned(hub, result, rid)
    state = result.registration_state
    assert state is not None and state.device_id is not None and state.assigned_hub is not None
    device = IoTHubDeviceClient.create_from_symmetric_key(key, state.assigned_hub, state.device_id,
                                                          **hub.device_kwargs())
    telemetry_from(hub, device, state.device_id)
    # As the official client: once assigned, the client is done.
    with pytest.raises(ClientError, match="already registered"):
        client.register()


def test_group_derived_key_over_websockets_with_the_aio_client(hub):
    group_key = new_key()
    group = "py-dps-group-" + uuid.uuid4().hex[:8]
    status, answer = hub.dps_request("PUT", f"/enrollmentGroups/{group}",
                                     {"enrollmentGroupId": group, "attestation": key_attestation(group_key)})
    assert status == 200, (status, answer)
    rid = group + "-member"
    key = derived_key(group_key, rid)

    async def register() -> RegistrationResult:
        client = aio.ProvisioningDeviceClient.create_from_symmetric_key(
            hub.hostname, rid, hub.dps["id_scope"], key, **hub.provisioning_kwargs(websockets=True)
        )
        # A true awaitable on the running loop: another task runs meanwhile.
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.get_running_loop().create_task(tick())
        try:
            result = await client.register()
        finally:
            ticker.cancel()
        assert ticks > 0
        await client.shutdown()
        return result

    result = asyncio.run(register())
    assert_assigned(hub, result, rid)
    assert result.registration_state is not None
    device = IoTHubDeviceClient.create_from_symmetric_key(key, hub.hostname, rid, **hub.device_kwargs())
    telemetry_from(hub, device, rid)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_x509_registers_and_the_device_connects_with_the_same_certificate(hub, tmp_path):
    rid = "py-dps-x509-" + uuid.uuid4().hex[:8]
    cert, key = self_signed_certificate(tmp_path, rid)
    with open(cert) as f:
        pem = f.read()
    enroll(hub, rid, {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}})
    client = ProvisioningDeviceClient.create_from_x509_certificate(
        hub.hostname, rid, hub.dps["id_scope"], X509(cert_file=cert, key_file=key), **hub.provisioning_kwargs()
    )
    result = client.register()
    assert_assigned(hub, result, rid)
    device = IoTHubDeviceClient.create_from_x509_certificate(X509(cert_file=cert, key_file=key), hub.hostname, rid,
                                                             **hub.device_kwargs())
    telemetry_from(hub, device, rid)


class AllocationWebhook:
    """A custom allocation webhook on http://127.0.0.1: records each request and assigns the
    first linked hub, answering with a payload for the device."""

    def __init__(self) -> None:
        self.requests: List[Dict[str, Any]] = []
        webhook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                webhook.requests.append(request)
                answer = json.dumps({
                    "iotHubHostName": request["linkedHubs"][0],
                    "payload": {"echo": request["deviceRuntimeContext"].get("payload"), "from": "webhook"},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/allocate"


def test_provisioning_payload_reaches_the_webhook_and_its_payload_comes_back(hub):
    rid = "py-dps-payload-" + uuid.uuid4().hex[:8]
    key = new_key()
    webhook = AllocationWebhook()
    try:
        enroll(hub, rid, key_attestation(key), allocationPolicy="custom",
               customAllocationDefinition={"webhookUrl": webhook.url, "apiVersion": "2021-10-01"})
        client = ProvisioningDeviceClient.create_from_symmetric_key(hub.hostname, rid, hub.dps["id_scope"], key,
                                                                    **hub.provisioning_kwargs())
        sent = {"model": "thermostat", "firmware": [1, 2, 3], "nested": {"ok": True}}
        client.provisioning_payload = sent
        assert client.provisioning_payload == sent
        result = client.register()
    finally:
        webhook.server.shutdown()
    assert result.status == "assigned"
    assert [r["deviceRuntimeContext"]["payload"] for r in webhook.requests] == [sent]
    assert result.registration_state is not None
    assert json.loads(result.registration_state.response_payload) == {"echo": sent, "from": "webhook"}


def test_a_wrong_key_is_a_credential_error(hub):
    rid = "py-dps-wrong-" + uuid.uuid4().hex[:8]
    enroll(hub, rid, key_attestation(new_key()))
    client = ProvisioningDeviceClient.create_from_symmetric_key(hub.hostname, rid, hub.dps["id_scope"], new_key(),
                                                                **hub.provisioning_kwargs())
    with pytest.raises(CredentialError) as raised:
        client.register()
    assert "refused" in str(raised.value)


def test_a_disabled_enrollment_is_a_client_error_caused_by_the_service_error(hub):
    rid = "py-dps-disabled-" + uuid.uuid4().hex[:8]
    key = new_key()
    enroll(hub, rid, key_attestation(key), provisioningStatus="disabled")
    client = ProvisioningDeviceClient.create_from_symmetric_key(hub.hostname, rid, hub.dps["id_scope"], key,
                                                                **hub.provisioning_kwargs())
    with pytest.raises(ClientError) as raised:
        client.register()
    assert type(raised.value) is ClientError
    assert isinstance(raised.value.__cause__, ServiceError) and "disabled" in str(raised.value.__cause__)
    assert key not in str(raised.value) and key not in str(raised.value.__cause__)


def test_an_unreachable_service_is_a_connection_failure(hub):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ProvisioningDeviceClient.create_from_symmetric_key(
        "127.0.0.1", "dev-1", hub.dps["id_scope"], new_key(), server_verification_cert=hub.ca, port=port
    )
    with pytest.raises(ConnectionFailedError):
        client.register()


def test_no_answer_in_time_is_an_operation_timeout_and_the_gil_is_released_meanwhile(hub):
    with socket.socket() as silent:  # accepts the connection, never answers the TLS handshake
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        client = ProvisioningDeviceClient.create_from_symmetric_key(
            "localhost", "dev-1", hub.dps["id_scope"], new_key(), server_verification_cert=hub.ca,
            port=silent.getsockname()[1], timeout=0.2,
        )
        counted = 0
        stop = threading.Event()

        def count() -> None:
            nonlocal counted
            while not stop.is_set():
                counted += 1

        counter = threading.Thread(target=count)
        counter.start()
        try:
            with pytest.raises(OperationTimeout):
                client.register()
        finally:
            stop.set()
            counter.join()
    assert counted > 10_000, f"another Python thread ran only {counted} steps while register waited"


def test_bad_arguments_fail_at_creation(hub):
    scope = hub.dps["id_scope"]
    create = ProvisioningDeviceClient.create_from_symmetric_key
    with pytest.raises(ValueError, match="symmetric_key"):
        create("localhost", "dev-1", scope, "not base64!!")
    with pytest.raises(ValueError, match="registration id"):
        create("localhost", "has space", scope, new_key())
    with pytest.raises(ValueError, match="id scope"):
        create("localhost", "dev-1", "0ne/1", new_key())
    with pytest.raises(TypeError, match="registration_id"):
        create("localhost", 7, scope, new_key())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unsupported keyword argument"):
        create("localhost", "dev-1", scope, new_key(), product_info="x")
    with pytest.raises(ValueError, match="proxy_options"):
        create("localhost", "dev-1", scope, new_key(), proxy_options=object())
    with pytest.raises(ValueError, match="server_verification_cert"):
        create("localhost", "dev-1", scope, new_key(), server_verification_cert="not PEM")
    with pytest.raises(ValueError, match="sastoken_ttl"):
        create("localhost", "dev-1", scope, new_key(), sastoken_ttl=0)
    with pytest.raises(TypeError, match="x509"):
        ProvisioningDeviceClient.create_from_x509_certificate("localhost", "dev-1", scope, "cert.pem")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sastoken_ttl"):  # as azure-iot-device: X.509 signs no token
        ProvisioningDeviceClient.create_from_x509_certificate("localhost", "dev-1", scope, X509("c", "k"), sastoken_ttl=60)
    with pytest.raises(TypeError, match="port"):
        create("localhost", "dev-1", scope, new_key(), port="8883")
    client = create("localhost", "dev-1", scope, new_key(), keep_alive=30, sastoken_ttl=60, gateway_hostname="localhost")
    with pytest.raises(TypeError, match="provisioning_payload"):
        client.provisioning_payload = {"not": object()}
    client.shutdown()
    with pytest.raises(ClientError, match="shut down"):
        client.register()
