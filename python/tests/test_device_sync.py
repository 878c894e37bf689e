"""The synchronous device client against the emulator."""

import datetime
import socket
import threading
from typing import Any, Dict, List

import pytest

from azure_iot_rs import IoTHubDeviceClient, Message, MethodResponse
from azure_iot_rs.exceptions import ClientError, ConnectionDroppedError, ConnectionFailedError, CredentialError
from azure_iot_rs.hub.models import CloudToDeviceMethod, Twin, TwinProperties

WAIT = 20  # seconds a test waits for something to arrive before failing


def client_for(hub: Any, device: Dict[str, str], **kwargs: Any) -> IoTHubDeviceClient:
    return IoTHubDeviceClient.create_from_connection_string(
        device["connection_string"], **{**hub.device_kwargs(kwargs.get("transport", "mqtt")), **kwargs}
    )


def test_telemetry_with_properties_reaches_the_hub(hub, device):
    client = client_for(hub, device)
    client.connect()
    assert client.connected
    message = Message('{"t": 21.5}', message_id="m-1", content_type="application/json", content_encoding="utf-8")
    message.custom_properties["alert"] = "high temp"
    message.correlation_id = "c-1"
    message.expiry_time_utc = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    client.send_message(message)
    client.send_message("plain text")
    client.shutdown()
    assert not client.connected

    events = hub.telemetry(device["device_id"], 2)
    assert [e["body"] for e in events] == ['{"t": 21.5}', "plain text"]
    assert events[0]["properties"] == {"alert": "high temp"}
    system = events[0]["systemProperties"]
    assert system["messageId"] == "m-1" and system["correlationId"] == "c-1", system
    assert system["contentType"] == "application/json", system
    assert system["connectionDeviceId"] == device["device_id"], system


def test_symmetric_key_factory_and_operations_connect_on_demand(hub, device):
    client = IoTHubDeviceClient.create_from_symmetric_key(
        device["key"], hub.hostname, device["device_id"], **hub.device_kwargs()
    )
    assert not client.connected
    client.send_message("first")  # connects, as the official client does
    assert client.connected
    client.shutdown()
    assert [e["body"] for e in hub.telemetry(device["device_id"], 1)] == ["first"]


def test_cloud_to_device_message_reaches_the_handler_on_a_package_thread(hub, device, registry):
    client = client_for(hub, device)
    received: List[Any] = []
    arrived = threading.Event()

    def on_message(message):
        received.append((message, threading.current_thread().name))
        arrived.set()

    client.on_message_received = on_message
    client.connect()
    # As in azure-iot-hub, these keys are the message's system properties, not custom ones.
    system = {"messageId": "m-7", "correlationId": "c-7", "contentType": "application/json", "contentEncoding": "utf-8"}
    registry.send_c2d_message(device["device_id"], "hello device", properties={"k": "v", "iothub-ack": "full", **system})
    assert arrived.wait(WAIT), "no C2D message reached the handler"
    client.shutdown()
    message, thread = received[0]
    assert message.data == b"hello device"
    assert message.custom_properties == {"k": "v"}
    assert (message.message_id, message.correlation_id) == ("m-7", "c-7")
    assert (message.content_type, message.content_encoding) == ("application/json", "utf-8")
    assert message.ack == "full"
    assert thread == "azure_iot_rs-handlers"
    with pytest.raises(ValueError, match="iothub-ack"):
        registry.send_c2d_message(device["device_id"], "x", properties={"iothub-ack": "sometimes"})


def test_method_answered_from_inside_the_handler(hub, device, registry):
    client = client_for(hub, device)

    def on_method(request):
        # Calling the client from a handler must not deadlock.
        payload = {"echo": request.payload, "name": request.name}
        client.send_method_response(MethodResponse.create_from_method_request(request, 201, payload))

    client.on_method_request_received = on_method
    client.connect()
    result = registry.invoke_device_method(
        device["device_id"], CloudToDeviceMethod("reboot", {"delay": 3}, response_timeout_in_seconds=20)
    )
    client.shutdown()
    assert result.status == 201
    assert result.payload == {"echo": {"delay": 3}, "name": "reboot"}


def test_twin_get_reported_patch_and_desired_patch(hub, device, registry):
    client = client_for(hub, device)
    patches: List[Dict[str, Any]] = []
    patched = threading.Event()

    def on_patch(patch):
        patches.append(patch)
        patched.set()

    client.on_twin_desired_properties_patch_received = on_patch
    client.connect()
    client.patch_twin_reported_properties({"firmware": "1.2.3"})
    twin = client.get_twin()
    assert twin["reported"]["firmware"] == "1.2.3"

    service_twin = registry.get_twin(device["device_id"])
    assert service_twin.properties is not None and service_twin.properties.reported is not None
    assert service_twin.properties.reported["firmware"] == "1.2.3"

    registry.update_twin(device["device_id"], Twin(properties=TwinProperties(desired={"interval": 7})), service_twin.etag)
    assert patched.wait(WAIT), "the desired patch did not reach the handler"
    assert patches[0]["interval"] == 7 and "$version" in patches[0]
    assert client.get_twin()["desired"]["interval"] == 7
    client.shutdown()


def test_a_raising_handler_goes_to_on_background_exception_and_the_client_keeps_running(hub, device, registry):
    client = client_for(hub, device)
    errors: List[BaseException] = []
    bodies: List[bytes] = []
    second = threading.Event()

    def on_message(message):
        bodies.append(message.data)
        if message.data == b"boom":
            raise RuntimeError("handler failed")
        second.set()

    client.on_message_received = on_message
    client.on_background_exception = errors.append
    client.connect()
    registry.send_c2d_message(device["device_id"], "boom")
    registry.send_c2d_message(device["device_id"], "after")
    assert second.wait(WAIT), "the message after the failing one was not handled"
    client.shutdown()
    assert bodies == [b"boom", b"after"]
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


def test_connection_state_handler_sees_connect_and_disconnect(hub, device):
    client = client_for(hub, device)
    states: List[bool] = []
    changed = threading.Condition()

    def on_state():
        with changed:
            states.append(client.connected)
            changed.notify_all()

    client.on_connection_state_change = on_state
    client.connect()
    with changed:
        assert changed.wait_for(lambda: len(states) >= 1, WAIT)
    client.disconnect()
    with changed:
        assert changed.wait_for(lambda: len(states) >= 2, WAIT)
    client.shutdown()
    assert states[:2] == [True, False]


def test_a_dropped_connection_is_reported_and_recovered(hub, device):
    client = client_for(hub, device)
    errors: List[BaseException] = []
    states: List[bool] = []
    changed = threading.Condition()

    def on_state():
        with changed:
            states.append(client.connected)
            changed.notify_all()

    def on_error(error):
        with changed:
            errors.append(error)
            changed.notify_all()

    client.on_connection_state_change = on_state
    client.on_background_exception = on_error
    client.connect()
    with changed:
        assert changed.wait_for(lambda: states == [True], WAIT), states
    hub.fault({"type": "dropConnection", "deviceId": device["device_id"]})
    with changed:
        # Lost, reported, and reconnected by the retry policy.
        assert changed.wait_for(lambda: len(states) >= 3 and errors, WAIT), (states, errors)
    assert states[:3] == [True, False, True]
    assert isinstance(errors[0], ConnectionDroppedError), errors
    client.send_message("after the drop")
    client.shutdown()
    assert [e["body"] for e in hub.telemetry(device["device_id"], 1)] == ["after the drop"]


def test_amqp_transport_sends_telemetry(hub, device):
    client = client_for(hub, device, transport="amqp")
    client.connect()
    client.send_message(Message("over amqp", message_id="a-1"))
    client.shutdown()
    events = hub.telemetry(device["device_id"], 1)
    assert events[0]["body"] == "over amqp"
    assert events[0]["systemProperties"]["messageId"] == "a-1"


# ---- bad input and refused connections ------------------------------------------------------


@pytest.mark.parametrize("text", ["", "nonsense", "HostName=h;SharedAccessKey=aGVsbG8="])
def test_a_bad_connection_string_fails_at_creation_with_value_error(text):
    with pytest.raises(ValueError, match="connection_string"):
        IoTHubDeviceClient.create_from_connection_string(text)


def test_wrong_argument_types_are_type_errors_naming_the_argument():
    with pytest.raises(TypeError, match="connection_string"):
        IoTHubDeviceClient.create_from_connection_string(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keep_alive"):
        IoTHubDeviceClient.create_from_connection_string(
            "HostName=h;DeviceId=d;SharedAccessKey=aGVsbG8=", keep_alive="60"
        )
    with pytest.raises(TypeError, match="no_such_option"):
        IoTHubDeviceClient.create_from_connection_string(
            "HostName=h;DeviceId=d;SharedAccessKey=aGVsbG8=", no_such_option=1
        )


def test_a_bad_ca_fails_at_creation():
    with pytest.raises(ValueError, match="server_verification_cert"):
        IoTHubDeviceClient.create_from_connection_string(
            "HostName=h;DeviceId=d;SharedAccessKey=aGVsbG8=", server_verification_cert="not a certificate"
        )


def test_wrong_key_is_a_credential_error_that_never_shows_the_key(hub, device):
    wrong = "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkhIQ=="
    client = IoTHubDeviceClient.create_from_connection_string(
        f"HostName={hub.hostname};DeviceId={device['device_id']};SharedAccessKey={wrong}",
        connection_retry=False,
        **hub.device_kwargs(),
    )
    with pytest.raises(CredentialError) as raised:
        client.connect()
    assert isinstance(raised.value, ClientError)
    assert wrong not in str(raised.value)
    client.shutdown()


def test_nothing_listening_is_a_connection_failed_error(hub, device):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = IoTHubDeviceClient.create_from_connection_string(
        device["connection_string"], server_verification_cert=hub.ca, port=port, connection_retry=False
    )
    with pytest.raises(ConnectionFailedError):
        client.connect()
    client.shutdown()


def test_send_message_refuses_what_is_not_a_message():
    client = IoTHubDeviceClient.create_from_connection_string("HostName=h;DeviceId=d;SharedAccessKey=aGVsbG8=")
    with pytest.raises(TypeError, match="message"):
        client.send_message(123)  # type: ignore[arg-type]
    message = Message({"not": "bytes"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data"):
        client.send_message(message)
