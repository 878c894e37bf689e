"""The official Python service SDK (azure-iot-hub) against this project's Rust device client.

The device side is the `echo_device` example of azure_iot_device (built here with cargo):
it answers every direct method with 200 and {"method": name, "payload": payload}, prints
each cloud-to-device message and each desired patch as a JSON line on stdout, and reports
every desired patch back. The service side is the unmodified official SDK, so each check
covers the whole path: official service SDK -> emulator -> our MQTT device client.

Run by ../run.sh with HUB_JSON, DATA_DIR and REQUESTS_CA_BUNDLE set. Ends with
"N passed, M failed"; exit status 0 only if nothing failed.
"""

import json
import os
import queue
import subprocess
import threading
import time

from harness import check, defaults, finish

# RUST_DEVICE_TRANSPORT (mqtt or amqp; run.sh runs this script once per transport) is the
# transport our device client uses.
TRANSPORT = os.environ.get("RUST_DEVICE_TRANSPORT", "mqtt")
defaults(client="Python service → Rust device", transport=TRANSPORT.upper())
import certifi

# The service SDK's AMQP stack (uamqp) trusts only certifi's bundle (it ignores
# REQUESTS_CA_BUNDLE): point it at the emulator's CA, as a user of the emulator would.
certifi.where = lambda: os.path.join(os.environ["DATA_DIR"], "ca.pem")

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties

HUB = json.load(open(os.environ["HUB_JSON"]))
DATA_DIR = os.environ["DATA_DIR"]
RM = IoTHubRegistryManager.from_connection_string(HUB["connection_strings"]["iothubowner"])
HOST = HUB["hostname"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEVICE = f"rust-echo-{TRANSPORT}"


def build_echo_device():
    """Builds the example and returns the path of its executable (wherever the target
    directory is: cargo says so in its compiler-artifact message)."""
    out = subprocess.run(
        ["cargo", "build", "--quiet", "--locked", "-p", "azure_iot_device", "--example", "echo_device",
         "--message-format", "json-render-diagnostics"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "echo_device" and msg.get("executable"):
            return msg["executable"]
    raise AssertionError("cargo built no echo_device executable")


class Agent:
    """The running echo_device: its stdout JSON lines arrive on a queue, read by a thread."""

    def __init__(self, executable, connection_string):
        env = dict(os.environ)
        env["IOTHUB_DEVICE_CONNECTION_STRING"] = connection_string
        env["IOTHUB_CA_PEM"] = os.path.join(DATA_DIR, "ca.pem")
        env.pop("IOTHUB_MQTT_PORT", None)
        env.pop("IOTHUB_PORT", None)
        env["IOTHUB_TRANSPORT"] = TRANSPORT
        port = HUB.get("ports", {}).get(TRANSPORT)
        if port:
            env["IOTHUB_PORT"] = str(port)
        # stdin stays an open pipe: the agent exits cleanly when it closes. stderr is
        # inherited, so the agent's errors show in this scenario's output.
        self.proc = subprocess.Popen(
            [executable], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                self.lines.put({"event": "not-json", "line": line.rstrip("\n")})
        self.lines.put(None)  # stdout closed: the agent has exited

    def expect(self, event, timeout=15):
        """The next line whose "event" is `event`; other lines are kept in self.seen."""
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f"no {event!r} line within {timeout}s; other lines: {self.seen}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.lines.put(None)  # keep the end visible to later calls
                try:
                    status = self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    status = "stdout closed, still running"
                raise AssertionError(f"echo_device exited ({status}) before a {event!r} line; lines: {self.seen}")
            if line.get("event") == event:
                return line
            self.seen.append(line)

    def stop(self, timeout=15):
        """Closes stdin (the agent disconnects and exits) and returns its exit status; kills it
        if it has not exited by then."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"echo_device still running {timeout}s after its stdin closed; killed")


agent = None


def running_agent():
    if agent is None:
        raise AssertionError("echo_device is not running (see the first check)")
    return agent


@check("our device client (echo_device) connects and subscribes", scenario="registry CRUD")
def _():
    global agent
    executable = build_echo_device()
    try:  # a rerun against the same emulator starts from a fresh identity
        RM.delete_device(DEVICE)
    except Exception:  # noqa: BLE001 - the SDK raises HttpOperationError for 404
        pass
    d = RM.create_device_with_sas(DEVICE, "", "", "enabled")
    key = d.authentication.symmetric_key.primary_key
    started = Agent(executable, f"HostName={HOST};DeviceId={DEVICE};SharedAccessKey={key}")
    agent = started
    started.expect("connected", timeout=60)
    assert RM.get_device(DEVICE).connection_state == "Connected", RM.get_device(DEVICE).connection_state


@check("direct method from the service SDK, answered by our device client", scenario="direct method")
def _():
    a = running_agent()
    payload = {"delay": 5, "text": "héllo", "list": [1, 2, None]}
    result = RM.invoke_device_method(
        DEVICE,
        CloudToDeviceMethod(method_name="reboot", payload=payload, response_timeout_in_seconds=10, connect_timeout_in_seconds=10),
    )
    assert result.status == 200, result
    assert result.payload == {"method": "reboot", "payload": payload}, result.payload
    line = a.expect("method")
    assert line["name"] == "reboot" and line["payload"] == payload, line


@check(f"cloud-to-device from the service SDK (AMQP) to our device client ({TRANSPORT.upper()})", scenario="cloud-to-device and feedback")
def _():
    a = running_agent()
    properties = {"color": "blue", "k space": "v/slash&amp=%", "empty": ""}
    # messageId and correlationId become AMQP message properties in the SDK (system
    # properties); the rest are application properties.
    RM.send_c2d_message(
        DEVICE, '{"command":"on"}', properties=dict(properties, messageId="c2d-mid-1", correlationId="c2d-cid-1")
    )
    line = a.expect("c2d")
    assert line["body"] == '{"command":"on"}', line
    for name, value in properties.items():
        assert line["properties"].get(name) == value, (name, line)
    assert line["messageId"] == "c2d-mid-1" and line["correlationId"] == "c2d-cid-1", line


@check("desired patch from the service SDK reaches our device client, reported back", scenario="twin: get, desired patch, reported")
def _():
    a = running_agent()
    desired = {"fan": True, "setpoint": 21.5, "mode": {"eco": "on", "level": 2}}
    twin = RM.update_twin(DEVICE, Twin(properties=TwinProperties(desired=desired)), "*")
    version = twin.properties.desired["$version"]
    line = a.expect("desired")
    assert line["version"] == version, (version, line)
    patch = {k: v for k, v in line["patch"].items() if not k.startswith("$")}
    assert patch == desired, line
    assert line["reportedVersion"] is not None, line
    # echo_device prints the line after the hub answered its reported PATCH.
    reported = RM.get_twin(DEVICE).properties.reported
    for name, value in desired.items():
        assert reported.get(name) == value, (name, reported)
    assert reported["$version"] == line["reportedVersion"], (reported, line)


@check("our device client disconnects and exits 0 when its stdin closes", scenario="clean disconnect")
def _():
    global agent
    a = running_agent()
    agent = None
    status = a.stop()
    assert status == 0, status
    deadline = time.time() + 5
    while RM.get_device(DEVICE).connection_state != "Disconnected":
        assert time.time() < deadline, RM.get_device(DEVICE).connection_state
        time.sleep(0.1)


if agent is not None:  # a check failed before the last one: do not leave the agent behind
    try:
        agent.stop(timeout=5)
    except AssertionError:
        pass

finish()
