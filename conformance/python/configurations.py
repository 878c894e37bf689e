"""Configurations (automatic device management) with the official Python service SDK
(azure-iot-hub 2.7.0 `IoTHubConfigurationManager`, unmodified) against the emulator: create
with a target condition and priority, get, list, update and delete with ETags, the
configuration applied to the targeted twin with system and custom metrics, query tests, bad
input, and IoT Edge content applied to one device. Ids are this script's own (`py-cfg-*`): the
full suite shares one emulator.

Run by ../run.sh with HUB_JSON pointing at the emulator's hub.json and REQUESTS_CA_BUNDLE at
its ca.pem. Ends with "N passed, M failed"; exit status 0 only if nothing failed.
"""

import json
import os
import time

from harness import check, defaults, finish

defaults(client="Python SDKs", transport="HTTPS")
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import (
    Configuration,
    ConfigurationContent,
    ConfigurationMetrics,
    ConfigurationQueriesTestInput,
    Twin,
)
from msrest.exceptions import HttpOperationError

HUB = json.load(open(os.environ["HUB_JSON"]))
OWNER = HUB["connection_strings"]["iothubowner"]
RM = IoTHubRegistryManager.from_connection_string(OWNER)
CM = IoTHubConfigurationManager.from_connection_string(OWNER)
DEVICE, OTHER, EDGE = "py-cfg-device", "py-cfg-other", "py-cfg-edge"
TAG = "py-cfg-target"


def status_of(call):
    try:
        call()
    except HttpOperationError as e:
        return e.response.status_code
    return 200


def until(read, accept, timeout=10):
    deadline = time.time() + timeout
    while True:
        value = read()
        if accept(value):
            return value
        assert time.time() < deadline, f"never satisfied: {value!r}"
        time.sleep(0.1)


def configuration(config_id, priority, content, metrics=None):
    return Configuration(
        id=config_id, priority=priority, labels={"origin": "conformance"},
        target_condition=f"tags.role = '{TAG}'",
        content=ConfigurationContent(device_content=content), metrics=metrics,
    )


RM.create_device_with_sas(DEVICE, "", "", "enabled")
RM.create_device_with_sas(OTHER, "", "", "enabled")
RM.update_twin(DEVICE, Twin(tags={"role": TAG}), "*")


@check("IoTHubConfigurationManager: create with target condition and priority, get, list, update with etag, delete", scenario="configurations: CRUD with ETags")
def _():
    created = CM.create_configuration(configuration("py-cfg-crud", 3, {"properties.desired.crud": {"on": True}}))
    assert created.etag and created.created_time_utc is not None, created
    assert created.priority == 3 and created.target_condition == f"tags.role = '{TAG}'", created
    got = CM.get_configuration("py-cfg-crud")
    assert got.id == "py-cfg-crud" and got.labels == {"origin": "conformance"}, got
    assert got.content.device_content == {"properties.desired.crud": {"on": True}}, got.content
    assert "py-cfg-crud" in [c.id for c in CM.get_configurations()]
    got.priority = 7
    updated = CM.update_configuration(got, got.etag)
    assert updated.priority == 7 and updated.etag != got.etag, updated
    assert status_of(lambda: CM.update_configuration(got, got.etag)) == 412
    assert status_of(lambda: CM.delete_configuration("py-cfg-crud", got.etag)) == 412
    CM.delete_configuration("py-cfg-crud", updated.etag)
    assert status_of(lambda: CM.get_configuration("py-cfg-crud")) == 404


@check("IoTHubConfigurationManager: the targeted twin gets the content; system and custom metrics count it", scenario="configurations: applied to twins, metrics")
def _():
    metrics = ConfigurationMetrics(queries={"tagged": f"SELECT deviceId FROM devices WHERE tags.role = '{TAG}'"})
    CM.create_configuration(configuration("py-cfg-apply", 5, {"properties.desired.settings": {"mode": "eco"}}, metrics))
    twin = until(lambda: RM.get_twin(DEVICE), lambda t: "settings" in t.properties.desired)
    assert twin.properties.desired["settings"] == {"mode": "eco"}, twin.properties.desired
    assert "settings" not in RM.get_twin(OTHER).properties.desired
    got = until(lambda: CM.get_configuration("py-cfg-apply"),
                lambda c: c.system_metrics and c.system_metrics.results.get("targetedCount") == 1)
    assert got.system_metrics.results.get("appliedCount") == 1, got.system_metrics.results
    assert got.metrics.results == {"tagged": 1}, got.metrics.results
    CM.delete_configuration("py-cfg-apply")


@check("IoTHubConfigurationManager: test_configuration_queries names the query that does not parse", scenario="configurations: bad input refused")
def _():
    good = CM.test_configuration_queries(ConfigurationQueriesTestInput(
        target_condition=f"tags.role = '{TAG}'", custom_metric_queries={"m": "SELECT deviceId FROM devices"}))
    assert not good.target_condition_error, good.target_condition_error
    assert not any((good.custom_metric_query_errors or {}).values()), good.custom_metric_query_errors
    bad = CM.test_configuration_queries(ConfigurationQueriesTestInput(
        target_condition="tags.role = = 'x'", custom_metric_queries={"m": "SELECT FROM"}))
    assert bad.target_condition_error and bad.custom_metric_query_errors.get("m"), bad


@check("IoTHubConfigurationManager: unparsable target condition 400, duplicate id 409, unknown id 404", scenario="configurations: bad input refused")
def _():
    bad = configuration("py-cfg-bad", 1, {"properties.desired.x": 1})
    bad.target_condition = "tags.role = = 'x'"
    assert status_of(lambda: CM.create_configuration(bad)) == 400
    CM.create_configuration(configuration("py-cfg-dup", 1, {"properties.desired.dup": 1}))
    assert status_of(lambda: CM.create_configuration(configuration("py-cfg-dup", 2, {"properties.desired.dup": 2}))) == 409
    CM.delete_configuration("py-cfg-dup")
    assert status_of(lambda: CM.get_configuration("py-cfg-nope")) == 404


@check("IoTHubConfigurationManager: apply_configuration_on_edge_device writes the module twins; an Edge deployment is 501 here", scenario="configurations: apply content to an edge device")
def _():
    RM.create_device_with_sas(EDGE, "", "", "enabled", iot_edge=True)
    content = ConfigurationContent(modules_content={"py-cfg-module": {"properties.desired": {"level": 4}}})
    CM.apply_configuration_on_edge_device(EDGE, content)
    twin = RM.get_module_twin(EDGE, "py-cfg-module")
    assert twin.properties.desired.get("level") == 4, twin.properties.desired
    deployment = Configuration(id="py-cfg-deploy", priority=1, target_condition=f"deviceId = '{EDGE}'", content=content)
    # The emulator does not run IoT Edge deployments (docs/EMULATOR.md): the SDK's error, not a success.
    assert status_of(lambda: CM.create_configuration(deployment)) == 501


finish()
