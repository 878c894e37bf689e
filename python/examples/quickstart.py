"""A first device and service program against the local emulator.

    azure-iot hub start --data-dir .azure-iot-hub        # in another terminal
    python examples/quickstart.py .azure-iot-hub

It registers a device, connects it, sends telemetry, answers a direct method from a handler,
reports a property and receives a desired-property patch. Against a real hub, build the
clients from your own connection strings and leave out the CA and port keywords."""

import json
import os
import sys
import threading
import uuid

from azure_iot_rs import IoTHubDeviceClient, Message, MethodResponse
from azure_iot_rs.hub import IoTHubRegistryManager
from azure_iot_rs.hub.models import CloudToDeviceMethod, Twin, TwinProperties


def main(data_dir: str) -> None:
    with open(os.path.join(data_dir, "hub.json")) as f:
        hub = json.load(f)
    with open(os.path.join(data_dir, "ca.pem")) as f:
        ca = f.read()
    ports = hub["ports"]

    # Service side: register a device (the hub generates its keys).
    registry = IoTHubRegistryManager.from_connection_string(
        hub["connection_strings"]["iothubowner"],
        server_verification_cert=ca, https_port=ports["https"], amqp_port=ports["amqp"],
    )
    device_id = "quickstart-" + uuid.uuid4().hex[:6]
    device = registry.create_device_with_sas(device_id, "", "", "enabled")
    key = device.authentication.symmetric_key.primary_key
    print(f"registered {device_id}")

    # Device side: the same code as with azure-iot-device, other than the imports.
    client = IoTHubDeviceClient.create_from_connection_string(
        f"HostName={hub['hostname']};DeviceId={device_id};SharedAccessKey={key}",
        server_verification_cert=ca, port=ports["mqtt"],
    )
    patched = threading.Event()

    def on_method(request):
        print(f"device: method {request.name} called with {request.payload}")
        client.send_method_response(MethodResponse.create_from_method_request(request, 200, {"rebooted": True}))

    def on_patch(patch):
        print(f"device: desired patch {patch}")
        patched.set()

    client.on_method_request_received = on_method
    client.on_twin_desired_properties_patch_received = on_patch
    client.connect()

    message = Message('{"temperature": 21.5}', content_type="application/json", content_encoding="utf-8")
    message.custom_properties["alert"] = "none"
    client.send_message(message)
    print("device: telemetry acknowledged by the hub")

    result = registry.invoke_device_method(device_id, CloudToDeviceMethod("reboot", {"delay": 0}))
    print(f"service: method answered {result.status} {result.payload}")

    client.patch_twin_reported_properties({"firmware": "1.0.0"})
    registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"interval": 5})))
    if not patched.wait(20):
        raise SystemExit("the desired patch did not arrive")
    print(f"service: reported firmware {registry.get_twin(device_id).properties.reported['firmware']}")

    client.shutdown()
    registry.delete_device(device_id)
    print("done")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".azure-iot-hub")
