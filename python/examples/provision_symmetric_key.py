"""Registers a device with the Device Provisioning Service by its symmetric key, then connects
to the hub DPS assigned and sends a few messages (azure-iot-device's provisioning sample, with
this package's imports).

Environment, as the official sample reads it:
    PROVISIONING_HOST              DPS's global device endpoint (global.azure-devices-provisioning.net)
    PROVISIONING_IDSCOPE           the id scope
    PROVISIONING_REGISTRATION_ID   the registration id
    PROVISIONING_SYMMETRIC_KEY     the enrollment's key (for a group: the key derived for this id)
and for a local emulator (`azure-iot hub start`) also:
    PROVISIONING_CA_FILE           the emulator's CA (ca.pem in its data dir)
    PROVISIONING_PORT              DPS's MQTT port when not 8883 (the emulator serves the hub there too)
"""

import os
import uuid

from azure_iot_rs import IoTHubDeviceClient, Message, ProvisioningDeviceClient


def main() -> None:
    local = {}
    if os.environ.get("PROVISIONING_CA_FILE"):
        with open(os.environ["PROVISIONING_CA_FILE"]) as f:
            local["server_verification_cert"] = f.read()
    if os.environ.get("PROVISIONING_PORT"):
        local["port"] = int(os.environ["PROVISIONING_PORT"])
    key = os.environ["PROVISIONING_SYMMETRIC_KEY"]

    provisioning = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=os.environ["PROVISIONING_HOST"],
        registration_id=os.environ["PROVISIONING_REGISTRATION_ID"],
        id_scope=os.environ["PROVISIONING_IDSCOPE"],
        symmetric_key=key,
        **local,
    )
    provisioning.provisioning_payload = {"model": "example-sensor"}
    result = provisioning.register()
    print(f"registration: {result.status}")
    state = result.registration_state
    if result.status != "assigned" or state is None or not state.assigned_hub or not state.device_id:
        raise SystemExit("the device was not assigned to a hub")
    print(f"assigned to {state.assigned_hub} as {state.device_id}")

    client = IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=key, hostname=state.assigned_hub, device_id=state.device_id, **local
    )
    client.connect()
    for i in range(1, 4):
        message = Message(f"test message #{i}", message_id=str(uuid.uuid4()))
        client.send_message(message)
        print(f"sent message #{i}")
    client.shutdown()
    print("done")


if __name__ == "__main__":
    main()
