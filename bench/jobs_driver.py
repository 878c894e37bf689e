"""Drives one round of bench/jobs.sh: registers N devices (bulk, 100 per call), schedules a
twin-update job over all of them, polls it every 50 ms until it finishes and prints a RESULT
line with the hub's own createdTime → endTime and the client-side wall time. Standard library
only (the SAS token is made here from the hub.json connection string)."""

import base64
import hashlib
import hmac
import json
import ssl
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime


def token(cs):
    parts = dict(p.split("=", 1) for p in cs.split(";"))
    resource = urllib.parse.quote(parts["HostName"], safe="").lower()
    expiry = int(time.time()) + 3600
    sig = base64.b64encode(hmac.new(base64.b64decode(parts["SharedAccessKey"]),
                                    f"{resource}\n{expiry}".encode(), hashlib.sha256).digest())
    return (f"SharedAccessSignature sr={resource}&sig={urllib.parse.quote(sig, safe='')}"
            f"&se={expiry}&skn={parts['SharedAccessKeyName']}")


def main(data_dir, count, job_id):
    hub = json.load(open(f"{data_dir}/hub.json"))
    base = f"https://localhost:{hub['ports']['https']}"
    auth = token(hub["connection_strings"]["iothubowner"])
    tls = ssl.create_default_context(cafile=f"{data_dir}/ca.pem")

    def call(method, path, body=None):
        request = urllib.request.Request(
            f"{base}{path}?api-version=2021-04-12", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": auth, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=tls) as reply:
            return json.loads(reply.read() or b"null")

    for start in range(0, count, 100):
        batch = [{"id": f"bench-{n:05}", "importMode": "create"} for n in range(start, min(start + 100, count))]
        result = call("POST", "/devices", batch)
        assert result["isSuccessful"], result
    began = time.perf_counter()
    call("PUT", f"/jobs/v2/{job_id}", {
        "jobId": job_id, "type": "scheduleUpdateTwin", "queryCondition": "IS_DEFINED(deviceId)",
        "updateTwin": {"tags": {"wave": job_id}, "properties": {"desired": {"interval": 42}}},
        "maxExecutionTimeInSeconds": 3600})
    while True:
        job = call("GET", f"/jobs/v2/{job_id}")
        if job["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.05)
    wall = time.perf_counter() - began
    stats = job["deviceJobStatistics"]
    assert job["status"] == "completed" and stats["succeededCount"] == count, job

    def at(text):
        return datetime.fromisoformat(text[:26].rstrip("Z"))

    hub_secs = (at(job["endTime"]) - at(job["createdTime"])).total_seconds()
    print(f"RESULT twin-job devices={count} hub_seconds={hub_secs:.3f} wall_seconds={wall:.3f} "
          f"devices_per_second={count / hub_secs:.0f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
