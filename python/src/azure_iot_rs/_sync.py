"""The synchronous clients. Every call blocks with the GIL released (other Python threads run)
and Ctrl-C interrupts it. Handlers run on one thread of this package, ``azure_iot_rs-handlers``,
never on the network threads: a handler may call the client, and a handler that raises goes to
``on_background_exception`` while the client keeps running."""

import json
import threading
from typing import Any, Dict, Optional

from ._base import ClientBase, DeviceFactories, ModuleFactories
from ._native import NativeDeviceClient

#: How long the handler thread waits for an event before looking whether it should stop.
_POLL_SECONDS = 0.5


class _SyncClient(ClientBase):
    def __init__(self, native: NativeDeviceClient) -> None:
        super().__init__(native)
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def _handlers_set(self) -> None:
        self._start_handler_thread()

    def _start_handler_thread(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopping.is_set():
                return
            self._thread = threading.Thread(
                target=self._run_handlers, name="azure_iot_rs-handlers", daemon=True
            )
            self._thread.start()

    def _run_handlers(self) -> None:
        while not self._stopping.is_set():
            event = self._native.next_event(_POLL_SECONDS)
            if event is None:
                continue
            call = self._handler_call(event)
            if call is None:
                continue
            handler, args = call
            try:
                handler(*args)
            except Exception as e:  # noqa: BLE001 - every handler failure is reported
                self._report(e)

    def connect(self) -> None:
        """Connects to the hub; returns once it accepted the connection."""
        self._start_handler_thread()
        self._native.connect()

    def disconnect(self) -> None:
        """Disconnects; the client can connect again."""
        self._native.disconnect()

    def shutdown(self) -> None:
        """Disconnects and stops the handler thread for good."""
        self._stopping.set()
        self._native.shutdown()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def update_sastoken(self, sastoken: str) -> None:
        """Replaces the SAS token of a client created with one, then reconnects with it (a
        disconnect and a connect, also when the client was not connected). ``ValueError``
        for a token that is not one, for another identity or expired; ``ClientError`` if the
        client was not created with a token; the connect's errors (``CredentialError``…)."""
        self._native.update_sastoken(self._sastoken_update_arg(sastoken))

    def send_message(self, message: Any) -> None:
        """Sends telemetry (a ``Message`` or a str); returns once the hub acknowledged it."""
        self._native.send_message(*self._message_args(message))

    def get_twin(self) -> Dict[str, Any]:
        """The twin: ``{"desired": {...}, "reported": {...}}``."""
        return json.loads(self._native.get_twin())

    def patch_twin_reported_properties(self, reported_properties_patch: Dict[str, Any]) -> None:
        """Merges the patch into the reported properties."""
        self._native.patch_twin_reported_properties(self._reported_args(reported_properties_patch))

    def send_method_response(self, method_response: Any) -> None:
        """Answers a direct method call."""
        self._native.send_method_response(*self._method_response_args(method_response))

    def __enter__(self) -> "_SyncClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


class IoTHubDeviceClient(DeviceFactories, _SyncClient):
    """A synchronous device client (the API of ``azure.iot.device.IoTHubDeviceClient``)."""

    def get_storage_info_for_blob(self, blob_name: str) -> Dict[str, str]:
        """Asks the hub where to upload the file ``blob_name``: a dict with ``correlationId``,
        ``hostName``, ``containerName``, ``blobName`` (``{deviceId}/{blob_name}``) and
        ``sasToken`` (a secret: it grants writing the blob). Over HTTPS, whatever the transport."""
        return self._storage_info(self._native.get_storage_info_for_blob(self._blob_name_arg(blob_name)))

    def notify_blob_upload_status(
        self, correlation_id: str, is_success: bool, status_code: int, status_description: str
    ) -> None:
        """Tells the hub how the upload ``correlation_id`` went (the back end gets a file-upload
        notification for a successful one)."""
        self._native.notify_blob_upload_status(
            *self._upload_status_args(correlation_id, is_success, status_code, status_description)
        )

    def upload_file(self, blob_name: str, data: Any) -> None:
        """This package's own (azure-iot-device has no such call): uploads ``data`` (bytes or
        str, UTF-8) as the blob ``{deviceId}/{blob_name}`` in one call — asks the hub where,
        writes the blob, and reports the outcome (a failed write is reported as failed, then
        raised)."""
        self._native.upload_file(self._blob_name_arg(blob_name), self._upload_data_arg(data))


class IoTHubModuleClient(ModuleFactories, _SyncClient):
    """A synchronous module client (the API of ``azure.iot.device.IoTHubModuleClient``)."""

    def send_message_to_output(self, message: Any, output_name: str) -> None:
        """Sends a message on the module output ``output_name``."""
        self._native.send_message(*self._output_message_args(message, output_name))
