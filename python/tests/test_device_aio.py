"""The asyncio device client against the emulator."""

import asyncio
import socket
from typing import Any, Dict, List

from azure_iot_rs import Message, MethodResponse
from azure_iot_rs.aio import IoTHubDeviceClient
from azure_iot_rs.exceptions import ConnectionFailedError, CredentialError
from azure_iot_rs.hub.models import CloudToDeviceMethod, Twin, TwinProperties

WAIT = 20


def client_for(hub: Any, device: Dict[str, str]) -> IoTHubDeviceClient:
    return IoTHubDeviceClient.create_from_connection_string(device["connection_string"], **hub.device_kwargs())


def test_aio_telemetry_twin_and_concurrent_sends(hub, device):
    async def run():
        client = client_for(hub, device)
        await client.connect()
        assert client.connected
        await asyncio.gather(*(client.send_message(Message(f"m{i}", message_id=str(i))) for i in range(20)))
        await client.patch_twin_reported_properties({"state": "aio"})
        twin = await client.get_twin()
        await client.shutdown()
        return twin

    twin = asyncio.run(run())
    assert twin["reported"]["state"] == "aio"
    bodies = sorted(e["body"] for e in hub.telemetry(device["device_id"], 20))
    assert bodies == sorted(f"m{i}" for i in range(20))


def test_aio_coroutine_handlers_for_c2d_methods_and_desired_patches(hub, device, registry):
    async def run():
        client = client_for(hub, device)
        loop = asyncio.get_running_loop()
        got_message: "asyncio.Future[Any]" = loop.create_future()
        got_patch: "asyncio.Future[Any]" = loop.create_future()

        async def on_message(message):
            got_message.set_result(message)

        async def on_method(request):
            await client.send_method_response(MethodResponse.create_from_method_request(request, 200, {"ok": True}))

        def on_patch(patch):  # a plain function: runs in the executor
            loop.call_soon_threadsafe(got_patch.set_result, patch)

        client.on_message_received = on_message
        client.on_method_request_received = on_method
        client.on_twin_desired_properties_patch_received = on_patch
        await client.connect()

        await loop.run_in_executor(None, registry.send_c2d_message, device["device_id"], "to aio")
        message = await asyncio.wait_for(got_message, WAIT)

        result = await loop.run_in_executor(
            None, registry.invoke_device_method, device["device_id"], CloudToDeviceMethod("ping", None, 20)
        )
        twin = Twin(properties=TwinProperties(desired={"mode": "fast"}))
        await loop.run_in_executor(None, registry.update_twin, device["device_id"], twin)
        patch = await asyncio.wait_for(got_patch, WAIT)
        await client.shutdown()
        return message, result, patch

    message, result, patch = asyncio.run(run())
    assert message.data == b"to aio"
    assert (result.status, result.payload) == (200, {"ok": True})
    assert patch["mode"] == "fast"


def test_aio_wrong_key_is_a_credential_error(hub, device):
    async def run():
        client = IoTHubDeviceClient.create_from_connection_string(
            f"HostName={hub.hostname};DeviceId={device['device_id']};SharedAccessKey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            connection_retry=False,
            **hub.device_kwargs(),
        )
        try:
            await client.connect()
        finally:
            await client.shutdown()

    try:
        asyncio.run(run())
    except CredentialError:
        return
    raise AssertionError("connect with a wrong key did not raise CredentialError")


def test_aio_send_failures_and_cancellations_reach_each_caller(hub, device):
    """Sends resolve through the batched completion queue: each failure goes to its own
    awaiting caller, a cancelled wait leaves the others working, and two loops in a row each
    get their own queue."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # closed again: nothing listens there

    async def failing() -> List[Any]:
        client = IoTHubDeviceClient.create_from_connection_string(
            device["connection_string"], server_verification_cert=hub.ca, port=closed_port, connection_retry=False
        )
        results = await asyncio.gather(*(client.send_message(f"m{i}") for i in range(5)), return_exceptions=True)
        await client.shutdown()
        return results

    async def cancelling() -> None:
        client = client_for(hub, device)
        await client.connect()
        waiting = asyncio.ensure_future(client.send_message("cancelled wait"))
        await asyncio.sleep(0)  # one turn of the loop: the send is now waiting for its ack
        waiting.cancel()
        await asyncio.gather(*(client.send_message(f"after {i}") for i in range(10)))
        await client.shutdown()

    results = asyncio.run(failing())
    assert all(isinstance(r, ConnectionFailedError) for r in results), results
    asyncio.run(cancelling())
    asyncio.run(cancelling())
