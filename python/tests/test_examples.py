"""The examples run end to end against the emulator."""

import pathlib
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_example_runs(hub):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py"), hub.data_dir], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "service: method answered 200 {'rebooted': True}" in done.stdout
    assert "service: reported firmware 1.0.0" in done.stdout
    assert done.stdout.strip().endswith("done")
