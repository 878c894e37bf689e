"""The examples run end to end against the emulator."""

import base64
import os
import pathlib
import subprocess
import sys
import uuid

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_example_runs(hub):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py"), hub.data_dir], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "service: method answered 200 {'rebooted': True}" in done.stdout
    assert "service: reported firmware 1.0.0" in done.stdout
    assert done.stdout.strip().endswith("done")


def test_provisioning_example_runs(hub):
    registration_id = "py-example-" + uuid.uuid4().hex[:8]
    key = base64.b64encode(os.urandom(32)).decode()
    attestation = {"type": "symmetricKey", "symmetricKey": {"primaryKey": key, "secondaryKey": key}}
    status, answer = hub.dps_request("PUT", f"/enrollments/{registration_id}",
                                     {"registrationId": registration_id, "attestation": attestation})
    assert status == 200, (status, answer)
    environment = {
        **os.environ,
        "PROVISIONING_HOST": hub.hostname,
        "PROVISIONING_IDSCOPE": hub.dps["id_scope"],
        "PROVISIONING_REGISTRATION_ID": registration_id,
        "PROVISIONING_SYMMETRIC_KEY": key,
        "PROVISIONING_CA_FILE": os.path.join(hub.data_dir, "ca.pem"),
        "PROVISIONING_PORT": str(hub.ports["mqtt"]),
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "provision_symmetric_key.py")],
        capture_output=True, text=True, timeout=120, env=environment,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"assigned to {hub.hostname} as {registration_id}" in done.stdout
    assert [e["body"] for e in hub.telemetry(registration_id, 3)] == [f"test message #{i}" for i in (1, 2, 3)]
