"""Jobs v2 against the emulator: the official Python service SDK (azure-iot-hub
`IoTHubJobManager`) schedules, reads, queries and cancels twin and method jobs while the official
Python device SDK (azure-iot-device over MQTT) answers the method and receives the desired patch;
then this project's service client does the same through `azure-iot job ...`.

Run by ../run.sh with HUB_JSON, DATA_DIR and AZURE_IOT_BIN set. Ends with "N passed, M failed";
exit status 0 only if nothing failed.
"""

import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone

from harness import azure_iot as cli, check, defaults, finish

from azure.iot.device import IoTHubDeviceClient, MethodResponse
from azure.iot.hub import IoTHubJobManager, IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, JobProperties, JobRequest, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

HUB = json.load(open(os.environ["HUB_JSON"]))
DATA_DIR = os.environ["DATA_DIR"]
CA = open(os.path.join(DATA_DIR, "ca.pem")).read()
OWNER = HUB["connection_strings"]["iothubowner"]
RM = IoTHubRegistryManager.from_connection_string(OWNER)
JOBS = IoTHubJobManager.from_connection_string(OWNER)
ON, OFF = "py-job-on", "py-job-off"
TARGETS = f"deviceId IN ['{ON}', '{OFF}']"

patches = []
patch_seen = threading.Event()
calls = []


def connect(device_id):
    d = RM.create_device_with_sas(device_id, "", "", "enabled")
    key = d.authentication.symmetric_key.primary_key
    cs = f"HostName={HUB['hostname']};DeviceId={device_id};SharedAccessKey={key}"
    client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=CA)

    def on_method(request):
        calls.append((request.name, request.payload))
        client.send_method_response(
            MethodResponse.create_from_method_request(request, 200, {"echo": request.payload}))

    def on_patch(patch):
        patches.append(patch)
        patch_seen.set()

    client.on_method_request_received = on_method
    client.on_twin_desired_properties_patch_received = on_patch
    client.connect()
    # A twin GET after the handlers' subscriptions: the hub has them once it answers (MQTT keeps
    # order on a connection), so the jobs below find the device subscribed.
    client.get_twin()
    return client


DEVICE = connect(ON)
RM.create_device_with_sas(OFF, "", "", "enabled")


def until_finished(get, job_id, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = get(job_id)
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def wait_patch(key, value, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(p.get(key) == value for p in patches):
            return
        patch_seen.wait(0.2)
        patch_seen.clear()
    raise AssertionError(f"no desired patch with {key}={value!r}: {patches}")


# ---- the official IoTHubJobManager ----------------------------------------------------------

def official_get(job_id):
    # The model as its REST JSON (camelCase keys), like the other clients' answers.
    return JOBS.get_scheduled_job(job_id).serialize()


@check("IoTHubJobManager: twin job over a query condition reaches the Python device's desired properties", scenario="jobs: twin update")
def _():
    request = JobRequest(
        job_id="py-twin", type="scheduleUpdateTwin", query_condition=TARGETS,
        update_twin=Twin(tags={"wave": 1}, properties=TwinProperties(desired={"interval": 11})),
        start_time=datetime.now(timezone.utc), max_execution_time_in_seconds=60)
    created = JOBS.create_scheduled_job("py-twin", request)
    assert created.job_id == "py-twin" and created.type == "scheduleUpdateTwin", created
    job = until_finished(official_get, "py-twin")
    assert job["status"] == "completed", job
    stats = job["deviceJobStatistics"]
    assert stats["deviceCount"] == 2 and stats["succeededCount"] == 2, stats
    wait_patch("interval", 11)
    assert RM.get_twin(OFF).tags == {"wave": 1}


@check("IoTHubJobManager: method job invokes the Python device; the offline device fails", scenario="jobs: direct method")
def _():
    request = JobRequest(
        job_id="py-method", type="scheduleDeviceMethod", query_condition=TARGETS,
        cloud_to_device_method=CloudToDeviceMethod(
            method_name="reboot", payload={"delay": 3}, response_timeout_in_seconds=10,
            connect_timeout_in_seconds=5),
        start_time=datetime.now(timezone.utc), max_execution_time_in_seconds=60)
    JOBS.create_scheduled_job("py-method", request)
    job = until_finished(official_get, "py-method")
    stats = job["deviceJobStatistics"]
    assert job["status"] == "completed" and stats["succeededCount"] == 1 and stats["failedCount"] == 1, job
    assert ("reboot", {"delay": 3}) in calls, calls


@check("IoTHubJobManager: query by type and status (any case)", scenario="jobs: query")
def _():
    result = JOBS.query_scheduled_jobs("scheduleDeviceMethod", "completed")
    ids = [item["jobId"] for item in result.items]
    assert ids == ["py-method"], ids
    result = JOBS.query_scheduled_jobs("ScheduleUpdateTwin", None)
    assert [item["jobId"] for item in result.items] == ["py-twin"], result.items


@check("IoTHubJobManager: cancel a scheduled job", scenario="jobs: cancel")
def _():
    request = JobRequest(
        job_id="py-later", type="scheduleUpdateTwin", query_condition=TARGETS,
        update_twin=Twin(tags={"later": True}),
        start_time=datetime.now(timezone.utc) + timedelta(hours=1), max_execution_time_in_seconds=60)
    assert JOBS.create_scheduled_job("py-later", request).status == "scheduled"
    cancelled = JOBS.cancel_scheduled_job("py-later")
    assert cancelled.status == "cancelled", cancelled
    assert official_get("py-later")["status"] == "cancelled"


@check("IoTHubJobManager: unknown job 404, duplicate id 409, malformed condition 400", scenario="jobs: errors")
def _():
    for call, status in [
        (lambda: JOBS.get_scheduled_job("py-nope"), 404),
        (lambda: JOBS.create_scheduled_job("py-twin", JobRequest(
            job_id="py-twin", type="scheduleUpdateTwin", query_condition=TARGETS,
            update_twin=Twin(tags={"a": 1}), start_time=datetime.now(timezone.utc),
            max_execution_time_in_seconds=60)), 409),
        (lambda: JOBS.create_scheduled_job("py-bad", JobRequest(
            job_id="py-bad", type="scheduleUpdateTwin", query_condition="deviceId = = 'x'",
            update_twin=Twin(tags={"a": 1}), start_time=datetime.now(timezone.utc),
            max_execution_time_in_seconds=60)), 400),
    ]:
        try:
            call()
        except HttpOperationError as e:
            assert e.response.status_code == status, (status, e.response.status_code)
        else:
            raise AssertionError(f"expected HTTP {status}")


def import_export_finished(job_id, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = JOBS.get_import_export_job(job_id)
        if job.status in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"import/export job {job_id} did not finish")


@check("IoTHubJobManager: export devices to a blob container, delete one, import it back with its keys", scenario="import/export devices jobs", transport="HTTPS")
def _():
    created = RM.create_device_with_sas("py-export-1", "", "", "enabled")
    uri = cli("hub", "container-sas", "--name", "py-export")[0]
    export = JOBS.create_import_export_job(JobProperties(
        type="export", output_blob_container_uri=uri, exclude_keys_in_export=False))
    assert export.type == "export" and export.job_id, export
    assert import_export_finished(export.job_id).status == "completed"
    RM.delete_device("py-export-1")
    imported = JOBS.create_import_export_job(JobProperties(
        type="import", input_blob_container_uri=uri, output_blob_container_uri=uri))
    done = import_export_finished(imported.job_id)
    assert done.status == "completed", done.failure_reason
    back = RM.get_device("py-export-1")
    assert back.authentication.symmetric_key.primary_key == created.authentication.symmetric_key.primary_key
    listed = [job.job_id for job in JOBS.get_import_export_jobs()]
    assert export.job_id in listed and imported.job_id in listed, listed


@check("IoTHubJobManager: unknown import/export job 404 (get and cancel)", scenario="import/export devices jobs", transport="HTTPS")
def _():
    for call in (lambda: JOBS.get_import_export_job("py-no-such-job"),
                 lambda: JOBS.cancel_import_export_job("py-no-such-job")):
        try:
            call()
        except HttpOperationError as e:
            assert e.response.status_code == 404, e.response.status_code
        else:
            raise AssertionError("expected HTTP 404")


# ---- this project's service client, through `azure-iot job` ----------------------------------

defaults(client="Rust service → Python device")


def rust_get(job_id):
    return json.loads("\n".join(cli("job", "show", "-j", job_id)))


@check("azure-iot job schedule-twin reaches the Python device's desired properties", scenario="jobs: twin update")
def _():
    job = json.loads("\n".join(cli(
        "job", "schedule-twin", "-j", "rs-twin", "-q", TARGETS, "--desired", '{"interval": 22}',
        "--tags", '{"wave": 2}', "--max-execution-time", "60", "--wait")))
    assert job["status"] == "completed" and job["deviceJobStatistics"]["succeededCount"] == 2, job
    wait_patch("interval", 22)


@check("azure-iot job schedule-method invokes the Python device; the offline device fails", scenario="jobs: direct method")
def _():
    job = json.loads("\n".join(cli(
        "job", "schedule-method", "-j", "rs-method", "-q", TARGETS, "-n", "blink",
        "--payload", '{"times": 2}', "--timeout", "10", "--connect-timeout", "5", "--wait")))
    stats = job["deviceJobStatistics"]
    assert stats["succeededCount"] == 1 and stats["failedCount"] == 1, job
    rows = [json.loads(line) for line in cli("job", "show", "-j", "rs-method", "--devices")
            if line.startswith("{") and '"deviceId"' in line]
    on = next(r for r in rows if r["deviceId"] == ON)
    assert on["outcome"]["deviceMethodResponse"] == {"status": 200, "payload": {"echo": {"times": 2}}}, on
    off = next(r for r in rows if r["deviceId"] == OFF)
    assert off["status"] == "failed" and off["error"]["code"] == "DeviceNotOnline", off


@check("azure-iot job list by type and status", scenario="jobs: query")
def _():
    lines = cli("job", "list", "--job-type", "schedule-device-method", "--job-status", "completed")
    ids = sorted(json.loads(line)["jobId"] for line in lines)
    assert ids == ["py-method", "rs-method"], ids


@check("azure-iot job cancel of a scheduled job", scenario="jobs: cancel")
def _():
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    job = json.loads("\n".join(cli(
        "job", "schedule-twin", "-j", "rs-later", "-q", TARGETS, "--tags", '{"later": true}',
        "--start-time", later)))
    assert job["status"] == "scheduled", job
    assert json.loads("\n".join(cli("job", "cancel", "-j", "rs-later")))["status"] == "cancelled"
    assert rust_get("rs-later")["status"] == "cancelled"


@check("azure-iot job: unknown job 404, duplicate id 409, malformed condition 400", scenario="jobs: errors")
def _():
    for args, status in [
        (("job", "show", "-j", "rs-nope"), "404"),
        (("job", "schedule-twin", "-j", "rs-twin", "-q", TARGETS, "--tags", '{"a": 1}'), "409"),
        (("job", "schedule-twin", "-j", "rs-bad", "-q", "deviceId = = 'x'", "--tags", '{"a": 1}'), "400"),
    ]:
        try:
            cli(*args)
        except AssertionError as e:
            assert status in str(e), (status, str(e))
        else:
            raise AssertionError(f"expected HTTP {status}")


DEVICE.shutdown()
finish()
