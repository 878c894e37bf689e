#!/usr/bin/env bash
# The Python package (azure_iot_rs, issue 16) beside the official Python SDKs it replaces, in
# the same run against one release `azure-iot hub start` (durable telemetry log):
#
#   * device: bench/peers/py_sdk.py — sync (each message awaited) and asyncio (100 in flight),
#     with its import + connect time and peak RSS — once with azure-iot-device 2.14 and once
#     with azure_iot_rs (PY_SDK=azure_iot_rs: only the driver's import lines differ), plus this
#     project's Rust client (bench_telemetry: 100 in flight for the ≥ 0.5× Rust target, and
#     awaiting each acknowledgement, which shows what the hub allows sync clients);
#   * service: bench/peers/py_service.py — 1,000 device creates then 1,000 twin reads — once
#     with azure-iot-hub 2.7 and once with azure_iot_rs.
#
# Each SDK lives in its own git-ignored virtual environment (bench/.venv: the official SDKs,
# pinned in bench/peers/requirements.txt; bench/.venv-rs: the release wheel built here with
# `maturin build --release`, whose size is printed), so neither import pays for the other.
# Rounds alternate the clients. Prints the RESULT line of every run, then medians and the
# issue's ratios (summarised by bench/python_summary.py).
#
# Needs root and free ports 443, 8883, 5671 and 10000: the official SDKs always dial
# mqtts://{host}:8883 and https://{host}:443. The hub's CA is trusted through CA_FILE (device
# drivers: server_verification_cert) and REQUESTS_CA_BUNDLE (service drivers; both SDKs read it).
#
# Environment: ROUNDS (default 3); SYNC_N, ASYNC_N, SERVICE_N (default 3000, 10000, 1000);
# BENCH_CARGO_LOCK (a lock file: every build then runs under `flock` on it, for machines where
# other builds share the cores); CARGO_TARGET_DIR as usual; BIN (a directory holding release
# builds of `azure-iot` and `examples/bench_telemetry`: nothing is built for them) and WHEEL
# (a release wheel of the package, built beforehand with `maturin build --release`: used
# instead of building one).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
rounds="${ROUNDS:-3}"
sync_n="${SYNC_N:-3000}"
async_n="${ASYNC_N:-10000}"
service_n="${SERVICE_N:-1000}"
target="${CARGO_TARGET_DIR:-$root/target}"
peers=bench/peers
locked=()
[ -z "${BENCH_CARGO_LOCK:-}" ] || locked=(flock "$BENCH_CARGO_LOCK")

# shellcheck source=bench/emulator.sh
. bench/emulator.sh
require_free_ports "python bench" 443 8883 5671 10000
# The official SDKs.
install_official_sdks
official=bench/.venv
# This project's package: the release wheel, in a venv of its own.
ours=bench/.venv-rs
[ -x "$ours/bin/python" ] || python3 -m venv "$ours"
"$ours/bin/pip" install --quiet --disable-pip-version-check maturin==1.16.0

if [ -z "${BIN:-}" ]; then
  ${locked[@]+"${locked[@]}"} cargo build --release --locked -q -p azure_iot_cli
  ${locked[@]+"${locked[@]}"} cargo build --release --locked -q -p azure_iot_device --example bench_telemetry
fi
wheels="$(mktemp -d)"
if [ -n "${WHEEL:-}" ]; then
  cp "$WHEEL" "$wheels/"
else
  (cd python && ${locked[@]+"${locked[@]}"} "$root/$ours/bin/maturin" build --release --quiet --locked --out "$wheels")
fi
wheel="$(ls "$wheels"/azure_iot_rs-*.whl)"
echo "wheel: $(basename "$wheel") $(stat -c %s "$wheel") bytes ($(du -k "$wheel" | cut -f1) KiB)"
"$ours/bin/pip" install --quiet --disable-pip-version-check --force-reinstall "$wheel"
rm -rf "$wheels"

bin="${BIN:-$target/release}"
work="$(mktemp -d)"
start_emulator "$bin" "$work"
echo "hub: azure-iot hub start (release, durable telemetry log) on 443/8883/5671/10000"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"), $(python3 --version)"

export CA_FILE="$work/hub/ca.pem" REQUESTS_CA_BUNDLE="$work/hub/ca.pem"
unset CURL_CA_BUNDLE
owner="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["connection_strings"]["iothubowner"])' "$work/hub/hub.json")"
# One device per client, created with the official service SDK.
register() {
  CS="$owner" "$official/bin/python" - "$1" <<'PY'
import os, sys
from azure.iot.hub import IoTHubRegistryManager
registry = IoTHubRegistryManager.from_connection_string(os.environ["CS"])
device = registry.create_device_with_sas(sys.argv[1], None, None, "enabled")
host = dict(kv.split("=", 1) for kv in os.environ["CS"].split(";"))["HostName"]
print(f"HostName={host};DeviceId={sys.argv[1]};SharedAccessKey={device.authentication.symmetric_key.primary_key}")
PY
}
cs_official="$(register bench-py-official)"
cs_ours="$(register bench-py-rs)"
cs_rust="$(register bench-rust)"

results="$work/results"
failures=0
run() { # label, connection string, command...
  local label="$1" cs="$2"; shift 2
  local line
  line="$(CS="$cs" T0_NS="$(date +%s%N)" "$@" 2>"$work/stderr" | grep '^RESULT ' | tail -n 1)" || true
  if [ -n "$line" ]; then
    echo "$label $line" | tee -a "$results"
  else
    echo "$label FAILED: $(tail -n 1 "$work/stderr")"
    failures=$((failures + 1))
  fi
}
for round in $(seq 1 "$rounds"); do
  echo "== round $round"
  run official-sync "$cs_official" "$official/bin/python" "$peers/py_sdk.py" sync "$sync_n"
  PY_SDK=azure_iot_rs run ours-sync "$cs_ours" "$ours/bin/python" "$peers/py_sdk.py" sync "$sync_n"
  run official-async "$cs_official" "$official/bin/python" "$peers/py_sdk.py" async "$async_n" 100
  PY_SDK=azure_iot_rs run ours-async "$cs_ours" "$ours/bin/python" "$peers/py_sdk.py" async "$async_n" 100
  run rust-seq "$cs_rust" "$bin/examples/bench_telemetry" seq "$sync_n"
  run rust-conc "$cs_rust" "$bin/examples/bench_telemetry" conc "$async_n" 100
  run official-service "$owner" "$official/bin/python" "$peers/py_service.py" "$service_n"
  PY_SDK=azure_iot_rs run ours-service "$owner" "$ours/bin/python" "$peers/py_service.py" "$service_n"
done
[ ! -f "$results" ] || python3 bench/python_summary.py "$results"
[ "$failures" -eq 0 ]
