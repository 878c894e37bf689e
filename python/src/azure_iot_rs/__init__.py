"""Azure IoT Hub device and service clients on a Rust core, with the API of
``azure-iot-device`` and ``azure-iot-hub`` 2.x: change the import lines, keep the code.

    from azure_iot_rs import IoTHubDeviceClient, Message          # azure.iot.device
    from azure_iot_rs import ProvisioningDeviceClient             # azure.iot.device
    from azure_iot_rs.aio import IoTHubDeviceClient               # azure.iot.device.aio
    from azure_iot_rs.exceptions import ConnectionFailedError     # azure.iot.device.exceptions
    from azure_iot_rs.hub import IoTHubRegistryManager            # azure.iot.hub
"""

from . import exceptions
from ._native import __version__
from ._provisioning import ProvisioningDeviceClient
from ._sync import IoTHubDeviceClient, IoTHubModuleClient
from .hub import IoTHubRegistryManager
from .models import (
    Message,
    MethodRequest,
    MethodResponse,
    ProxyOptions,
    RegistrationResult,
    RegistrationState,
    X509,
)

__all__ = [
    "IoTHubDeviceClient",
    "IoTHubModuleClient",
    "IoTHubRegistryManager",
    "Message",
    "MethodRequest",
    "MethodResponse",
    "ProvisioningDeviceClient",
    "ProxyOptions",
    "RegistrationResult",
    "RegistrationState",
    "X509",
    "exceptions",
    "__version__",
]
