"""The official Python service SDK (azure-iot-hub IoTHubRegistryManager) against the emulator.

Run by ../run.sh with HUB_JSON pointing at the emulator's hub.json and REQUESTS_CA_BUNDLE at
its ca.pem. Every check is a real call through the unmodified SDK; the script prints one line
per check and ends with "N passed, M failed". Exit status is 0 only if nothing failed.
"""

import base64
import json
import os

from harness import check, defaults, finish

defaults(client="Python SDKs", transport="HTTPS")
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import (
    CloudToDeviceMethod,
    ExportImportDevice,
    QuerySpecification,
    Twin,
    TwinProperties,
)
from msrest.exceptions import HttpOperationError

HUB = json.load(open(os.environ["HUB_JSON"]))
RM = IoTHubRegistryManager.from_connection_string(HUB["connection_strings"]["iothubowner"])
KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(32, 64))).decode()



def status_of(call):
    try:
        call()
    except HttpOperationError as e:
        return e.response.status_code
    return 200


@check("create device with given SAS keys", scenario="registry CRUD")
def _():
    d = RM.create_device_with_sas("py-dev-1", KEY_A, KEY_B, "enabled")
    assert d.device_id == "py-dev-1"
    assert d.authentication.symmetric_key.primary_key == KEY_A
    assert d.status == "enabled"
    assert d.connection_state == "Disconnected"


@check("create device letting the hub generate keys", scenario="registry CRUD")
def _():
    d = RM.create_device_with_sas("py-dev-2", "", "", "disabled")
    assert len(base64.b64decode(d.authentication.symmetric_key.primary_key)) == 32
    assert d.status == "disabled"


@check("create duplicate device is 409", scenario="registry CRUD")
def _():
    assert status_of(lambda: RM.create_device_with_sas("py-dev-1", KEY_A, KEY_B, "enabled")) == 409


@check("get and update device with etag", scenario="registry CRUD")
def _():
    d = RM.get_device("py-dev-1")
    u = RM.update_device_with_sas("py-dev-1", d.etag, KEY_B, KEY_A, "disabled")
    assert u.status == "disabled"
    assert u.authentication.symmetric_key.primary_key == KEY_B
    assert u.etag != d.etag
    assert status_of(lambda: RM.update_device_with_sas("py-dev-1", d.etag, KEY_A, KEY_B, "enabled")) == 412


@check("create device with X.509 thumbprints", scenario="registry CRUD")
def _():
    d = RM.create_device_with_x509("py-x509", "A" * 40, "B" * 40, "enabled")
    assert d.authentication.type == "selfSigned"
    assert d.authentication.x509_thumbprint.primary_thumbprint == "A" * 40


@check("modules: create, get, list, update, delete", scenario="module identities")
def _():
    m = RM.create_module_with_sas("py-dev-1", "py-mod", "me", KEY_A, KEY_B)
    assert m.module_id == "py-mod" and m.device_id == "py-dev-1" and m.managed_by == "me"
    got = RM.get_module("py-dev-1", "py-mod")
    assert got.authentication.symmetric_key.primary_key == KEY_A
    assert [x.module_id for x in RM.get_modules("py-dev-1")] == ["py-mod"]
    u = RM.update_module_with_sas("py-dev-1", "py-mod", "you", got.etag, KEY_B, KEY_A)
    assert u.managed_by == "you"
    RM.delete_module("py-dev-1", "py-mod")
    assert status_of(lambda: RM.get_module("py-dev-1", "py-mod")) == 404


@check("twin: get, update (merge), replace", scenario="twin: get, desired patch, reported")
def _():
    t = RM.get_twin("py-dev-2")
    assert t.device_id == "py-dev-2"
    assert t.properties.desired["$version"] == 1
    patch = Twin(tags={"floor": 3}, properties=TwinProperties(desired={"temp": 21}))
    u = RM.update_twin("py-dev-2", patch, t.etag)
    assert u.tags == {"floor": 3}
    assert u.properties.desired["temp"] == 21
    assert u.properties.desired["$version"] == 2
    r = RM.replace_twin("py-dev-2", Twin(properties=TwinProperties(desired={"only": 1})))
    assert "temp" not in r.properties.desired and r.properties.desired["only"] == 1
    assert status_of(lambda: RM.update_twin("py-dev-2", patch, t.etag)) == 412


@check("module twin: get and update", scenario="module: output, twin, method")
def _():
    RM.create_module_with_sas("py-dev-2", "m2", None, KEY_A, KEY_B)
    t = RM.get_module_twin("py-dev-2", "m2")
    assert t.module_id == "m2"
    u = RM.update_module_twin("py-dev-2", "m2", Twin(properties=TwinProperties(desired={"k": "v"})), t.etag)
    assert u.properties.desired["k"] == "v"


@check("query with paging and projections", scenario="query with paging")
def _():
    for i in range(5):
        RM.create_device_with_sas(f"py-q-{i}", KEY_A, KEY_B, "enabled")
    seen, token, pages = [], None, 0
    while True:
        page = RM.query_iot_hub(QuerySpecification(query="SELECT * FROM devices WHERE STARTSWITH(deviceId, 'py-q-')"), token, 2)
        pages += 1
        seen += [item.device_id for item in page.items]
        token = page.continuation_token
        if not token:
            break
    assert seen == [f"py-q-{i}" for i in range(5)], seen
    assert pages == 3
    assert page.type == "twin"
    # The Python SDK deserialises every item as a Twin, so only the shape can be checked here.
    count = RM.query_iot_hub(QuerySpecification(query="SELECT COUNT() AS n FROM devices"))
    assert count.type == "raw" and len(count.items) == 1, count.items


@check("statistics", scenario="statistics and bulk")
def _():
    s = RM.get_device_registry_statistics()
    assert s.total_device_count >= 8
    assert RM.get_service_statistics().connected_device_count == 0


@check("bulk create and delete", scenario="statistics and bulk")
def _():
    result = RM.bulk_create_or_update_devices([
        ExportImportDevice(id="py-bulk-1", import_mode="create"),
        ExportImportDevice(id="py-bulk-2", import_mode="create"),
    ])
    assert result.is_successful, result.errors
    assert RM.get_device("py-bulk-2").device_id == "py-bulk-2"
    result = RM.bulk_create_or_update_devices([ExportImportDevice(id="py-bulk-1", import_mode="delete")])
    assert result.is_successful


@check("create and update with CA and X.509 authentication, list devices", scenario="registry CRUD")
def _():
    d = RM.create_device_with_certificate_authority("py-ca", "enabled", iot_edge=True)
    assert d.authentication.type == "certificateAuthority" and d.capabilities.iot_edge
    u = RM.update_device_with_x509("py-ca", d.etag, "C" * 40, "D" * 40, "disabled")
    assert u.authentication.type == "selfSigned" and u.status == "disabled"
    assert u.authentication.x509_thumbprint.secondary_thumbprint == "D" * 40
    assert status_of(lambda: RM.update_device_with_certificate_authority("py-ca", d.etag, "enabled")) == 412
    c = RM.update_device_with_certificate_authority("py-ca", u.etag, "enabled")
    assert c.authentication.type == "certificateAuthority" and c.status == "enabled"
    assert "py-ca" in [x.device_id for x in RM.get_devices()]
    assert len(RM.get_devices(1)) == 1
    RM.delete_device("py-ca", c.etag)


@check("modules with X.509 and CA authentication", scenario="module identities")
def _():
    m = RM.create_module_with_x509("py-dev-2", "m-x509", None, "A" * 40, "B" * 40)
    assert m.authentication.type == "selfSigned"
    assert m.authentication.x509_thumbprint.primary_thumbprint == "A" * 40
    u = RM.update_module_with_x509("py-dev-2", "m-x509", "me", m.etag, "E" * 40, "F" * 40)
    assert u.authentication.x509_thumbprint.primary_thumbprint == "E" * 40 and u.managed_by == "me"
    ca = RM.create_module_with_certificate_authority("py-dev-2", "m-ca", None)
    assert ca.authentication.type == "certificateAuthority"
    assert RM.update_module_with_certificate_authority("py-dev-2", "m-ca", "edge", ca.etag).managed_by == "edge"
    RM.delete_module("py-dev-2", "m-x509")
    RM.delete_module("py-dev-2", "m-ca")


@check("module twin: replace, stale etag 412", scenario="module: output, twin, method")
def _():
    t = RM.get_module_twin("py-dev-2", "m2")
    r = RM.replace_module_twin("py-dev-2", "m2", Twin(tags={"t": 1}, properties=TwinProperties(desired={"only": 1})), t.etag)
    assert r.tags == {"t": 1} and "k" not in r.properties.desired and r.properties.desired["only"] == 1
    assert status_of(lambda: RM.update_module_twin("py-dev-2", "m2", Twin(tags={"t": 2}), t.etag)) == 412


@check("direct method to an offline module is 404", scenario="method on an offline device")
def _():
    call = CloudToDeviceMethod(method_name="reboot", payload={}, response_timeout_in_seconds=5, connect_timeout_in_seconds=0)
    assert status_of(lambda: RM.invoke_device_module_method("py-dev-2", "m2", call)) == 404


@check("direct method to an offline device is 404", scenario="method on an offline device")
def _():
    assert status_of(lambda: RM.invoke_device_method("py-dev-1", CloudToDeviceMethod(method_name="reboot", payload={}, response_timeout_in_seconds=5, connect_timeout_in_seconds=0))) == 404


@check("delete device, then it is gone", scenario="registry CRUD")
def _():
    RM.delete_device("py-dev-1")
    assert status_of(lambda: RM.get_device("py-dev-1")) == 404


@check("a wrong key is refused with 401", scenario="wrong key refused")
def _():
    cs = HUB["connection_strings"]["iothubowner"].split("SharedAccessKey=")[0] + "SharedAccessKey=" + KEY_A
    bad = IoTHubRegistryManager.from_connection_string(cs)
    assert status_of(lambda: bad.get_device("py-dev-2")) == 401


finish()
