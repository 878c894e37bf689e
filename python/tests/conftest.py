"""Fixtures: one emulator (`azure-iot hub start --in-memory`, ephemeral ports) for the whole
run, a registry manager on it, and fresh devices.

The emulator binary is $AZURE_IOT_BIN, or target/debug/azure-iot of the repository (ci.sh
builds it)."""

import base64
import hashlib
import hmac
import json
import os
import pathlib
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from azure_iot_rs.hub import IoTHubRegistryManager

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("AZURE_IOT_BIN", str(ROOT / "target" / "debug" / "azure-iot"))


def sas_token(resource: str, key: str, ttl: int = 3600) -> str:
    """A SAS token for `resource` (`host/devices/id`, or the hub's host) signed with `key`."""
    sr = urllib.parse.quote(resource, safe="")
    expiry = int(time.time()) + ttl
    digest = hmac.new(base64.b64decode(key), f"{sr}\n{expiry}".encode(), hashlib.sha256).digest()
    sig = urllib.parse.quote(base64.b64encode(digest).decode(), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={expiry}"


def self_signed_certificate(directory: pathlib.Path, common_name: str) -> Tuple[str, str]:
    """A self-signed EC certificate for `common_name` made with the openssl command, valid two
    days: (cert file, key file), PEM."""
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={common_name}"],
        check=True, capture_output=True,
    )
    return cert, key


class Hub:
    """A running emulator: its data dir, CA, ports and connection strings."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        with open(os.path.join(data_dir, "hub.json")) as f:
            info = json.load(f)
        self.hostname: str = info["hostname"]
        self.ports: Dict[str, int] = info["ports"]
        self.owner: str = info["connection_strings"]["iothubowner"]
        #: id_scope, hostname, global_endpoint, connection_string (provisioningserviceowner).
        self.dps: Dict[str, str] = info["dps"]
        with open(os.path.join(data_dir, "ca.pem")) as f:
            self.ca: str = f.read()

    def owner_request(self, path: str, data: Optional[bytes] = None, method: str = "GET") -> Tuple[int, bytes]:
        """Calls the emulator's HTTPS API as iothubowner: (status, body)."""
        fields = dict(part.split("=", 1) for part in self.owner.split(";"))
        token = sas_token(fields["HostName"], fields["SharedAccessKey"]) + f"&skn={fields['SharedAccessKeyName']}"
        request = urllib.request.Request(
            f"https://{self.hostname}:{self.ports['https']}{path}", data=data, method=method,
            headers={"Authorization": token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=self.ssl_context(), timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def dps_request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Tuple[int, Any]:
        """Calls the emulator's DPS service REST API (enrollments, registrations) as
        provisioningserviceowner: (status, JSON body or None)."""
        fields = dict(part.split("=", 1) for part in self.dps["connection_string"].split(";"))
        token = sas_token(fields["HostName"], fields["SharedAccessKey"]) + f"&skn={fields['SharedAccessKeyName']}"
        request = urllib.request.Request(
            f"https://{self.hostname}:{self.ports['https']}{path}?api-version=2021-10-01",
            data=None if body is None else json.dumps(body).encode(), method=method,
            headers={"Authorization": token, "Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=self.ssl_context(), timeout=30) as answer:
                text = answer.read()
                return answer.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def provisioning_kwargs(self, websockets: bool = False) -> Dict[str, Any]:
        """What a provisioning client needs besides its attestation to reach this emulator's
        DPS (served on the hub's ports)."""
        port = self.ports["https"] if websockets else self.ports["mqtt"]
        return {"server_verification_cert": self.ca, "port": port, "websockets": websockets}

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the emulator's CA."""
        return ssl.create_default_context(cadata=self.ca)

    def fault(self, fault: Dict[str, Any]) -> None:
        """Injects a fault (`POST /$emulator/faults`, docs/EMULATOR.md)."""
        status, _ = self.owner_request("/$emulator/faults?api-version=2021-04-12", json.dumps(fault).encode(), "POST")
        assert status == 204, status

    def uploaded_file(self, name: str) -> Optional[bytes]:
        """The bytes of the uploaded file `name` (`{deviceId}/{blob}`), or None if there is
        none (`GET /$emulator/files/{name}`)."""
        status, body = self.owner_request("/$emulator/files/" + urllib.parse.quote(name))
        if status == 404:
            return None
        assert status == 200, (status, body)
        return body

    def registry(self) -> IoTHubRegistryManager:
        return IoTHubRegistryManager.from_connection_string(
            self.owner, server_verification_cert=self.ca, https_port=self.ports["https"], amqp_port=self.ports["amqp"]
        )

    def device_kwargs(self, transport: str = "mqtt") -> Dict[str, Any]:
        """What a device client needs besides its credentials to reach this emulator."""
        port = {"amqp": self.ports["amqp"], "https": self.ports["https"]}.get(transport, self.ports["mqtt"])
        return {"server_verification_cert": self.ca, "port": port, "transport": transport, "https_port": self.ports["https"]}

    def telemetry(self, device_id: str, count: int) -> List[Dict[str, Any]]:
        """The first `count` telemetry messages the hub stored for `device_id` (waits up to
        20 s for them), read with `azure-iot hub monitor-events --emulator-api`: the emulator's
        own log keeps what the device sent (a module's output name included), which the Event
        Hubs-compatible endpoint does not show."""
        done = subprocess.run(
            [BIN, "hub", "monitor-events", "--emulator-api", "--data-dir", self.data_dir, "--output", "json", "--from-start",
             "--device-id", device_id, "--count", str(count), "--timeout", "20"],
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def hub() -> Iterator[Hub]:
    if not os.path.exists(BIN):
        pytest.fail(f"the emulator binary {BIN} does not exist: build it (cargo build -p azure_iot_cli) or set AZURE_IOT_BIN")
    with tempfile.TemporaryDirectory() as data_dir:
        log = open(os.path.join(data_dir, "emulator.log"), "w")
        process = subprocess.Popen(
            [BIN, "hub", "start", "--in-memory", "--data-dir", data_dir,
             "--https-port", "0", "--mqtt-port", "0", "--amqp-port", "0"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            hub_json = os.path.join(data_dir, "hub.json")
            deadline = time.monotonic() + 30
            # Waits for a condition (the emulator wrote hub.json), not for a fixed time.
            while not os.path.exists(hub_json):
                assert process.poll() is None, open(os.path.join(data_dir, "emulator.log")).read()
                assert time.monotonic() < deadline, "the emulator did not start within 30 s"
                time.sleep(0.05)
            yield Hub(data_dir)
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()


@pytest.fixture(scope="session")
def registry(hub: Hub) -> IoTHubRegistryManager:
    return hub.registry()


@pytest.fixture
def device(hub: Hub, registry: IoTHubRegistryManager) -> Iterator[Dict[str, str]]:
    """A new device: its id, key and connection string."""
    device_id = "py-" + uuid.uuid4().hex[:12]
    created = registry.create_device_with_sas(device_id, "", "", "enabled")
    assert created.authentication is not None and created.authentication.symmetric_key is not None
    key = created.authentication.symmetric_key.primary_key
    assert key
    yield {
        "device_id": device_id,
        "key": key,
        "connection_string": f"HostName={hub.hostname};DeviceId={device_id};SharedAccessKey={key}",
    }
    registry.delete_device(device_id)
