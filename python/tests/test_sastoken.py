"""SAS-token clients as in azure-iot-device 2.x: ``on_new_sastoken_required`` fires 120 s before
the token expires, ``update_sastoken`` checks the new token and reconnects with it (sync and
aio), against the emulator."""

import asyncio
import threading
import time
import urllib.parse
from typing import Any, List

import pytest
from conftest import sas_token

from azure_iot_rs import IoTHubDeviceClient, IoTHubModuleClient
from azure_iot_rs import aio
from azure_iot_rs.exceptions import ClientError, CredentialError

WAIT = 20


def token_for(hub: Any, device: Any, ttl: int = 3600) -> str:
    return sas_token(f"{hub.hostname}/devices/{device['device_id']}", device["key"], ttl)


def test_the_handler_fires_120_s_before_expiry_and_update_reconnects(hub, device):
    # 100 s left: inside the 120 s margin, so the handler is due at once.
    client = IoTHubDeviceClient.create_from_sastoken(token_for(hub, device, ttl=100), **hub.device_kwargs())
    required = threading.Event()
    threads: List[str] = []
    changes: List[str] = []

    def on_new_sastoken_required() -> None:
        threads.append(threading.current_thread().name)
        required.set()

    client.on_new_sastoken_required = on_new_sastoken_required
    client.on_connection_state_change = lambda: changes.append("changed")
    client.connect()
    assert required.wait(WAIT), "on_new_sastoken_required was not called"
    assert threads == ["azure_iot_rs-handlers"]

    def wait_for_changes(count: int) -> None:
        deadline = time.monotonic() + WAIT
        while len(changes) < count and time.monotonic() < deadline:
            time.sleep(0.05)  # waits for the handler thread to report the change
        assert len(changes) >= count, changes

    wait_for_changes(1)  # connected
    client.update_sastoken(token_for(hub, device))
    assert client.connected
    client.send_message("after the update")
    wait_for_changes(3)  # disconnected by the reauthorization, connected with the new token
    client.shutdown()
    assert [e["body"] for e in hub.telemetry(device["device_id"], 1)] == ["after the update"]


def test_update_sastoken_uses_the_new_token(hub, device):
    client = IoTHubDeviceClient.create_from_sastoken(token_for(hub, device), **hub.device_kwargs())
    client.connect()
    forged = sas_token(f"{hub.hostname}/devices/{device['device_id']}", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    with pytest.raises(CredentialError) as raised:
        client.update_sastoken(forged)
    assert urllib.parse.parse_qs(forged)["sig"][0] not in str(raised.value)
    client.shutdown()


def test_a_connection_string_with_a_token_takes_updates(hub, device):
    cs = f"HostName={hub.hostname};DeviceId={device['device_id']};SharedAccessSignature={token_for(hub, device)}"
    client = IoTHubDeviceClient.create_from_connection_string(cs, **hub.device_kwargs())
    client.update_sastoken(token_for(hub, device, ttl=7200))  # connects, as 2.x's reauthorization does
    assert client.connected
    client.send_message("cs token")
    client.shutdown()


def test_update_sastoken_checks_the_token_as_2x_does(hub, device):
    client = IoTHubDeviceClient.create_from_sastoken(token_for(hub, device), **hub.device_kwargs())
    other = {"device_id": "someone-else", "key": device["key"]}
    cases = [
        ("SharedAccessSignature nonsense", "Invalid SasToken provided"),
        (sas_token(f"{hub.hostname}/devices/{device['device_id']}/modules/m", device["key"]), "is for a module"),
        (token_for(hub, other), "does not match existing device id"),
        (sas_token(f"elsewhere.example/devices/{device['device_id']}", device["key"]), "does not match existing hostname"),
        (token_for(hub, device, ttl=-10), "has already expired"),
    ]
    for token, message in cases:
        with pytest.raises(ValueError, match=message):
            client.update_sastoken(token)
    with pytest.raises(TypeError, match="sastoken"):
        client.update_sastoken(42)  # type: ignore[arg-type]
    assert not client.connected  # nothing was tried
    client.shutdown()


def test_update_sastoken_needs_a_client_made_with_a_token(hub, device):
    client = IoTHubDeviceClient.create_from_connection_string(device["connection_string"], **hub.device_kwargs())
    with pytest.raises(ClientError, match="not created with one"):
        client.update_sastoken(token_for(hub, device))
    client.shutdown()


def test_a_module_client_refuses_a_device_token(hub, device, registry):
    module = registry.create_module_with_sas(device["device_id"], "tok", None, "", "")
    assert module.authentication is not None and module.authentication.symmetric_key is not None
    key = module.authentication.symmetric_key.primary_key
    assert key
    token = sas_token(f"{hub.hostname}/devices/{device['device_id']}/modules/tok", key)
    client = IoTHubModuleClient.create_from_sastoken(token, **hub.device_kwargs())
    with pytest.raises(ValueError, match="is for a device"):
        client.update_sastoken(token_for(hub, device))
    with pytest.raises(ValueError, match="does not match existing module id"):
        client.update_sastoken(sas_token(f"{hub.hostname}/devices/{device['device_id']}/modules/other", key))
    client.update_sastoken(sas_token(f"{hub.hostname}/devices/{device['device_id']}/modules/tok", key, 7200))
    client.send_message_to_output("module token", "out1")
    client.shutdown()


def test_creating_from_an_expired_token_is_a_value_error(hub, device):
    with pytest.raises(ValueError, match="has already expired"):
        IoTHubDeviceClient.create_from_sastoken(token_for(hub, device, ttl=-10))


def test_aio_handler_and_update(hub, device):
    async def run() -> List[str]:
        client = aio.IoTHubDeviceClient.create_from_sastoken(token_for(hub, device, ttl=60), **hub.device_kwargs())
        required = asyncio.Event()
        calls: List[str] = []

        async def on_new_sastoken_required() -> None:
            calls.append("called")
            required.set()

        client.on_new_sastoken_required = on_new_sastoken_required
        await client.connect()
        await asyncio.wait_for(required.wait(), WAIT)
        await client.update_sastoken(token_for(hub, device))
        assert client.connected
        await client.send_message("aio after the update")
        with pytest.raises(ValueError, match="does not match existing device id"):
            await client.update_sastoken(token_for(hub, {"device_id": "x", "key": device["key"]}))
        await client.shutdown()
        return calls

    assert asyncio.run(run()) == ["called"]
    assert [e["body"] for e in hub.telemetry(device["device_id"], 1)] == ["aio after the update"]
