"""How the package behaves as a Python citizen: blocking calls release the GIL and Ctrl-C
interrupts them, and the interpreter exits promptly with a client still connected."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator, Tuple

import pytest

from azure_iot_rs import IoTHubDeviceClient
from azure_iot_rs.exceptions import OperationTimeout

KEY = "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28="


@pytest.fixture
def silent_hub() -> Iterator[Tuple[int, threading.Event]]:
    """A TCP port that accepts connections and never answers (a hung hub), and an event set
    when the client's connection arrives."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = threading.Event()
    held = []

    def accept() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        held.append(conn)
        accepted.set()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    server.close()
    for conn in held:
        conn.close()


def test_a_blocking_call_releases_the_gil(hub, silent_hub):
    port, _ = silent_hub
    client = IoTHubDeviceClient.create_from_connection_string(
        f"HostName=localhost;DeviceId=gil;SharedAccessKey={KEY}",
        server_verification_cert=hub.ca, port=port, connection_retry=False, operation_timeout=1.0,
    )
    longest_gap = [0.0]
    stop = threading.Event()

    def watch() -> None:
        # The longest time this thread could not run: a call holding the GIL for its whole
        # second would show a gap of about a second.
        last = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            longest_gap[0] = max(longest_gap[0], now - last)
            last = now

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        started = time.monotonic()
        with pytest.raises(OperationTimeout):
            client.connect()  # the hub never answers: the client's 1 s timeout ends it
        assert time.monotonic() - started >= 0.9
    finally:
        stop.set()
        watcher.join()
    client.shutdown()
    assert longest_gap[0] < 0.5, longest_gap[0]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to the own process is POSIX")
def test_ctrl_c_interrupts_a_blocking_call(hub, silent_hub):
    port, accepted = silent_hub
    client = IoTHubDeviceClient.create_from_connection_string(
        f"HostName=localhost;DeviceId=ctrlc;SharedAccessKey={KEY}",
        server_verification_cert=hub.ca, port=port, connection_retry=False, operation_timeout=60.0,
    )

    def interrupt_once_connected() -> None:
        if accepted.wait(30):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_connected, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client.connect()
    assert time.monotonic() - started < 10  # not the 60 s operation timeout
    client.shutdown()


def test_the_interpreter_exits_promptly_with_a_connected_client(hub, device):
    script = (
        "import os\n"
        "from azure_iot_rs import IoTHubDeviceClient\n"
        "c = IoTHubDeviceClient.create_from_connection_string(os.environ['CS'],"
        " server_verification_cert=os.environ['CA'], port=int(os.environ['PORT']))\n"
        "c.on_message_received = print\n"
        "c.connect()\n"
        "assert c.connected\n"
        "print('connected', flush=True)\n"
    )
    env = {**os.environ, "CS": device["connection_string"], "CA": hub.ca, "PORT": str(hub.ports["mqtt"])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "connected"
