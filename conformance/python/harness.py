"""The tiny test harness the conformance scenarios share: each `@check` runs at once, prints
`ok`/`FAIL` with the reason, and `finish()` prints "N passed, M failed" and exits non-zero on
any failure. Checks keep going after a failure so one run reports everything.

Each check also names the rows and column it fills in docs/CONFORMANCE.md: `scenario` (a
row, or a list of rows; the check's name when not given), and the `client` and `transport` under test (the
column; a script sets its defaults with `defaults(...)`). When CONFORMANCE_RESULTS names a
file, `finish()` appends one JSON line per check to it for `conformance/table.py`.

CONFORMANCE_PY_SDK=azure_iot_rs swaps this project's Python package in by import (issue 16):
importing the harness (every scenario does so first) makes `azure.iot.device[.aio|.exceptions]`
and `azure.iot.hub[.models]` load `azure_iot_rs[.aio|.exceptions]` and `azure_iot_rs.hub[.models]`,
and `msrest.exceptions.HttpOperationError` the package's own class, so the scenarios run
unchanged; their checks are then reported under the client "azure_iot_rs: <client>"."""

import importlib
import json
import os
import sys
import traceback
import types

results = []
skipped = []
_defaults = {"client": "Python SDKs", "transport": "MQTT"}

#: The official modules and what stands in for them when the package is swapped in.
_SWAPS = {
    "azure.iot.device": "azure_iot_rs",
    "azure.iot.device.aio": "azure_iot_rs.aio",
    "azure.iot.device.exceptions": "azure_iot_rs.exceptions",
    "azure.iot.hub": "azure_iot_rs.hub",
    "azure.iot.hub.models": "azure_iot_rs.hub.models",
}
SWAPPED = os.environ.get("CONFORMANCE_PY_SDK", "") == "azure_iot_rs"
if os.environ.get("CONFORMANCE_PY_SDK", "") not in ("", "azure_iot_rs"):
    sys.exit("CONFORMANCE_PY_SDK must be unset or azure_iot_rs")
if SWAPPED:
    for official, ours in _SWAPS.items():
        sys.modules[official] = importlib.import_module(ours)
    _msrest = types.ModuleType("msrest.exceptions")
    _msrest.HttpOperationError = importlib.import_module("azure_iot_rs.exceptions").HttpOperationError
    sys.modules["msrest.exceptions"] = _msrest


def defaults(client=None, transport=None):
    if client:
        _defaults["client"] = client
    if transport:
        _defaults["transport"] = transport


def check(name, scenario=None, client=None, transport=None):
    def wrap(fn):
        cell = {
            "scenario": scenario or name,
            "client": ("azure_iot_rs: " if SWAPPED else "") + (client or _defaults["client"]),
            "transport": transport or _defaults["transport"],
        }
        try:
            fn()
            results.append((name, None, cell))
            print(f"ok    {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure and keep going
            results.append((name, e, cell))
            print(f"FAIL  {name}: {e!r}", flush=True)
            traceback.print_exc()
        return fn

    return wrap


def skip(name, reason):
    """A check that cannot run with the client under test: printed with the reason, counted
    neither way and left out of the table."""
    skipped.append(name)
    print(f"skip  {name}: {reason}", flush=True)


def azure_iot(*args, timeout=30):
    """Runs this project's `azure-iot` (AZURE_IOT_BIN) against the emulator in DATA_DIR; returns
    its non-empty stdout lines."""
    import subprocess

    done = subprocess.run(
        [os.environ["AZURE_IOT_BIN"], *args, "--data-dir", os.environ["DATA_DIR"]],
        capture_output=True, text=True, timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(f"azure-iot {' '.join(args)} failed: {done.stderr.strip()}")
    return [line for line in done.stdout.splitlines() if line.strip()]


def finish():
    failed = [name for name, error, _ in results if error is not None]
    path = os.environ.get("CONFORMANCE_RESULTS")
    if path:
        with open(path, "a") as out:
            for name, error, cell in results:
                scenarios = cell["scenario"] if isinstance(cell["scenario"], list) else [cell["scenario"]]
                for scenario in scenarios:
                    row = {**cell, "scenario": scenario, "check": name, "passed": error is None}
                    out.write(json.dumps(row) + "\n")
    if skipped:
        print(f"({len(skipped)} skipped, in neither count)")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)
