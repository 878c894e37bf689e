"""The asyncio clients (the API of ``azure.iot.device.aio``). Every method is a true awaitable
completed on the running loop by the Rust runtime (no thread per call). Handlers may be
coroutine functions (awaited on the loop) or plain functions (run in the loop's default
executor, so they never block it)."""

import asyncio
import inspect
import json
import weakref
from typing import Any, Dict, Optional, Tuple

from .. import _native
from .._base import ClientBase, DeviceFactories, ModuleFactories
from .._native import NativeDeviceClient
from .._provisioning import ProvisioningClientBase, _official_errors
from ..models import RegistrationResult

_POLL_SECONDS = 1.0

#: The native completion queue (unix only; elsewhere sends use per-call awaitables).
_NativeCompletions = getattr(_native, "NativeCompletions", None)


class _Completer:
    """Resolves the futures of the sends of one loop in batches: the Rust runtime queues each
    outcome without touching Python and wakes the loop through a socket it watches; the loop
    then resolves every future queued meanwhile (see crates/azure_iot_python/src/completions.rs)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        assert _NativeCompletions is not None
        self.native = _NativeCompletions()
        self.futures: Dict[int, "asyncio.Future[None]"] = {}
        self.next_id = 0
        loop.add_reader(self.native.fileno(), self._drain)

    def _drain(self) -> None:
        futures = self.futures
        for op, error in self.native.drain():
            future = futures.pop(op, None)
            if future is None or future.done():
                continue  # its caller was cancelled; the send itself went on
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


#: One completer per running loop (dropped with the loop).
_COMPLETERS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Optional[_Completer]]" = (
    weakref.WeakKeyDictionary()
)


def _completer(loop: asyncio.AbstractEventLoop) -> Optional[_Completer]:
    try:
        return _COMPLETERS[loop]
    except KeyError:
        pass
    completer: Optional[_Completer] = None
    if _NativeCompletions is not None:
        try:
            completer = _Completer(loop)
        except NotImplementedError:  # a loop without add_reader (e.g. Windows' proactor)
            completer = None
    _COMPLETERS[loop] = completer
    return completer


class _AsyncClient(ClientBase):
    def __init__(self, native: NativeDeviceClient) -> None:
        super().__init__(native)
        self._dispatcher: Optional["asyncio.Task[None]"] = None
        self._stopping = False
        #: The loop of the last send and its completer (the per-send lookup, cached).
        self._completer_loop: Optional[asyncio.AbstractEventLoop] = None
        self._completer: Optional[_Completer] = None

    def _handlers_set(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # started by connect() or the first operation, on the loop
        self._start_dispatcher()

    def _start_dispatcher(self) -> None:
        if self._dispatcher is None and not self._stopping:
            self._dispatcher = asyncio.get_running_loop().create_task(self._run_handlers())

    async def _run_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            event = await self._native.next_event_async(_POLL_SECONDS)
            if event is None:
                continue
            call = self._handler_call(event)
            if call is None:
                continue
            handler, args = call
            if inspect.iscoroutinefunction(handler):
                loop.create_task(self._guarded(handler(*args)))
            else:
                loop.create_task(self._guarded(loop.run_in_executor(None, handler, *args)))

    async def _guarded(self, awaitable: Any) -> None:
        try:
            await awaitable
        except Exception as e:  # noqa: BLE001 - every handler failure is reported
            self._report(e)

    async def connect(self) -> None:
        """Connects to the hub; returns once it accepted the connection."""
        self._start_dispatcher()
        await self._native.connect_async()

    async def disconnect(self) -> None:
        """Disconnects; the client can connect again."""
        await self._native.disconnect_async()

    async def shutdown(self) -> None:
        """Disconnects and stops the handler task for good."""
        self._stopping = True
        await self._native.shutdown_async()
        task, self._dispatcher = self._dispatcher, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def update_sastoken(self, sastoken: str) -> None:
        """Replaces the SAS token of a client created with one, then reconnects with it (see
        the sync client's ``update_sastoken``)."""
        self._start_dispatcher()
        await self._native.update_sastoken_async(self._sastoken_update_arg(sastoken))

    async def send_message(self, message: Any) -> None:
        """Sends telemetry (a ``Message`` or a str); returns once the hub acknowledged it.
        Cancelling the caller stops the wait, not the send."""
        self._start_dispatcher()
        await self._send(self._message_args(message))

    async def _send(self, args: Tuple[bytes, Any, Any]) -> None:
        loop = asyncio.get_running_loop()
        if loop is self._completer_loop:
            completer = self._completer
        else:  # the first send on this loop: look its completer up once
            completer = self._completer = _completer(loop)
            self._completer_loop = loop
        if completer is None:
            await self._native.send_message_async(*args)
            return
        completer.next_id += 1
        op = completer.next_id
        self._native.send_message_queued(completer.native, op, *args)
        future: "asyncio.Future[None]" = loop.create_future()
        completer.futures[op] = future  # resolved by _drain, on this thread, after this await
        await future

    async def get_twin(self) -> Dict[str, Any]:
        """The twin: ``{"desired": {...}, "reported": {...}}``."""
        self._start_dispatcher()
        return json.loads(await self._native.get_twin_async())

    async def patch_twin_reported_properties(self, reported_properties_patch: Dict[str, Any]) -> None:
        """Merges the patch into the reported properties."""
        self._start_dispatcher()
        await self._native.patch_twin_reported_properties_async(self._reported_args(reported_properties_patch))

    async def send_method_response(self, method_response: Any) -> None:
        """Answers a direct method call."""
        await self._native.send_method_response_async(*self._method_response_args(method_response))


class IoTHubDeviceClient(DeviceFactories, _AsyncClient):
    """An asyncio device client (the API of ``azure.iot.device.aio.IoTHubDeviceClient``)."""

    async def get_storage_info_for_blob(self, blob_name: str) -> Dict[str, str]:
        """Asks the hub where to upload the file ``blob_name``: a dict with ``correlationId``,
        ``hostName``, ``containerName``, ``blobName`` and ``sasToken`` (a secret)."""
        info = await self._native.get_storage_info_for_blob_async(self._blob_name_arg(blob_name))
        return self._storage_info(info)

    async def notify_blob_upload_status(
        self, correlation_id: str, is_success: bool, status_code: int, status_description: str
    ) -> None:
        """Tells the hub how the upload ``correlation_id`` went."""
        await self._native.notify_blob_upload_status_async(
            *self._upload_status_args(correlation_id, is_success, status_code, status_description)
        )

    async def upload_file(self, blob_name: str, data: Any) -> None:
        """This package's own (azure-iot-device has no such call): uploads ``data`` (bytes or
        str, UTF-8) as the blob ``{deviceId}/{blob_name}`` and reports the outcome, in one call."""
        await self._native.upload_file_async(self._blob_name_arg(blob_name), self._upload_data_arg(data))


class IoTHubModuleClient(ModuleFactories, _AsyncClient):
    """An asyncio module client (the API of ``azure.iot.device.aio.IoTHubModuleClient``)."""

    async def send_message_to_output(self, message: Any, output_name: str) -> None:
        """Sends a message on the module output ``output_name``."""
        await self._send(self._output_message_args(message, output_name))


class ProvisioningDeviceClient(ProvisioningClientBase):
    """Registers a device with the Device Provisioning Service (the API of
    ``azure.iot.device.aio.ProvisioningDeviceClient``); ``register`` is an awaitable completed
    on the running loop."""

    async def register(self) -> RegistrationResult:
        """Registers the device and returns the assignment (``status`` ``"assigned"``)."""
        payload = self._payload_arg()
        with _official_errors():
            return self._result(await self._native.register_async(payload))

    async def shutdown(self) -> None:
        """Ends the client: a later ``register`` raises ``ClientError``."""
        self._done = "the client has been shut down"


__all__ = ["IoTHubDeviceClient", "IoTHubModuleClient", "ProvisioningDeviceClient"]
