#!/usr/bin/env bash
# Device provisioning end to end (issue 15): registrations per second — register, poll until
# assigned, the hub identity created — for the members of one symmetric-key enrollment group,
# with this project's provisioning client (`iot-bench dps`, azure_iot_provisioning_device)
# beside the official Python client (bench/peers/py_dps.py, azure-iot-device's
# ProvisioningDeviceClient), against the same release emulator in the same run.
#
# One `azure-iot hub start` on a fresh data directory (durable registry and DPS state) with
# `--dps-retry-after RETRY_AFTER`; one enrollment group created through the CLI
# (`azure-iot dps enrollment-group create`); then per round, clients in alternating order:
#   ours-mqtt    iot-bench dps --transport mqtt   COUNT registrations, INFLIGHT at a time
#   ours-https   iot-bench dps --transport https  (HTTPS=0 skips it; the Python client has
#                                                 no HTTPS transport)
#   python-mqtt  py_dps.py                        PY_COUNT registrations, INFLIGHT at a time
#                                                 (PY_COUNT=0 skips it)
#   python-mqtt-wide  py_dps.py, PY_WIDE_INFLIGHT at a time, when that is set: the official
#                client waits a fixed 2 s before its first poll whatever `retry-after` says,
#                so at INFLIGHT it measures that wait; with many more in flight it shows
#                what the client itself costs
# Every run uses fresh registration ids (`{client}-r{round}-{i}`). For each run the script
# prints the driver's RESULT line (registrations/s, p50/p99/max latency of one registration),
# the client's CPU seconds (bash `time`), and the emulator's CPU seconds, its RSS before the run
# and its peak RSS during it (VmHWM, reset before each run through /proc/PID/clear_refs). After
# the last round every run is checked: the hub must hold exactly as many SAS identities with
# its prefix as it had registrations assigned (`iot-bench count-devices`; these queries come
# last because each one materialises every twin and leaves the emulator's RSS hundreds of MiB
# higher). Then medians and the ratios (bench/dps_summary.py).
#
# Needs root and free ports 443, 8883, 5671: the official SDK always dials port 8883.
# Environment: ROUNDS (3), COUNT (10000), PY_COUNT (COUNT), INFLIGHT (32), RETRY_AFTER (0),
# HTTPS (1), PY_WIDE_INFLIGHT (unset), BENCH_CARGO_LOCK (a lock file: the build then runs
# under `flock` on it, for machines where other builds share the cores), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
rounds="${ROUNDS:-3}"
count="${COUNT:-10000}"
py_count="${PY_COUNT:-$count}"
inflight="${INFLIGHT:-32}"
retry_after="${RETRY_AFTER:-0}"
https="${HTTPS:-1}"
py_wide="${PY_WIDE_INFLIGHT:-}"
target="${CARGO_TARGET_DIR:-$root/target}"
peers=bench/peers
locked=()
[ -z "${BENCH_CARGO_LOCK:-}" ] || locked=(flock "$BENCH_CARGO_LOCK")

# shellcheck source=bench/emulator.sh
. bench/emulator.sh
require_free_ports "dps bench" 443 8883 5671
install_official_sdks
venv=bench/.venv

${locked[@]+"${locked[@]}"} cargo build --release --locked -q -p azure_iot_cli -p azure_iot_bench
bin="$target/release"
work="$(mktemp -d)"
start_emulator "$bin" "$work" --dps-retry-after "$retry_after"
hub_pid=$HUB_PID

hub_field() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$work/hub/hub.json" "$1"; }
export DPS_HOST ID_SCOPE HUB_HOSTNAME DPS_GROUP_KEY CA_FILE="$work/hub/ca.pem"
DPS_HOST="$(hub_field 'd["dps"]["global_endpoint"].rsplit(":", 1)[0]')"
ID_SCOPE="$(hub_field 'd["dps"]["id_scope"]')"
HUB_HOSTNAME="$(hub_field 'd["hostname"]')"
new_key() { python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())'; }
DPS_GROUP_KEY="$(new_key)"
"$bin/azure-iot" dps enrollment-group create --data-dir "$work/hub" --group-id bench \
  --primary-key "$DPS_GROUP_KEY" --secondary-key "$(new_key)" >/dev/null

echo "emulator: azure-iot hub start (release, registry and DPS state on disk), --dps-retry-after $retry_after"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r), $(python3 --version), azure-iot-device $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("azure-iot-device"))')"
echo "registrations: $count (ours), $py_count (Python), $inflight in flight${py_wide:+ (Python also $py_wide)}, one enrollment group (symmetric key)"

ticks="$(getconf CLK_TCK)"
cpu_of() { awk -v t="$ticks" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
results="$work/results"
failures=0
run() { # label, prefix, registrations, command...
  local label="$1" prefix="$2" n="$3"; shift 3
  local line cpu0 cpu1 rss0 hwm assigned
  echo 5 >"/proc/$hub_pid/clear_refs" # resets the emulator's peak RSS (VmHWM) to its RSS now
  rss0="$(awk '/VmRSS/ {print $2}' "/proc/$hub_pid/status")"
  cpu0="$(cpu_of "$hub_pid")"
  line="$({ TIMEFORMAT='%U %S'; time "$@" 2>"$work/stderr"; } 2>"$work/time" | grep '^RESULT ' | tail -n 1)" || true
  cpu1="$(cpu_of "$hub_pid")"
  hwm="$(awk '/VmHWM/ {print $2}' "/proc/$hub_pid/status")"
  if [ -z "$line" ]; then
    echo "$label FAILED: $(tail -n 1 "$work/stderr")"
    failures=$((failures + 1))
    return
  fi
  assigned="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1].split(" ", 1)[1])["assigned"])' "$line")"
  [ "$assigned" = "$n" ] || { echo "$label: only $assigned of $n assigned: $(tail -n 1 "$work/stderr")"; failures=$((failures + 1)); }
  echo "$label $prefix $assigned" >>"$work/checks"
  read -r user sys <"$work/time"
  echo "$label $line" | tee -a "$results"
  echo "$label USAGE {\"client_cpu_s\": $(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }'), \"emulator_cpu_s\": $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f", b - a }'), \"emulator_rss_before_kib\": $rss0, \"emulator_peak_rss_kib\": $hwm}" | tee -a "$results"
}
ours() { # transport, round
  run "ours-$1" "rs-$1-r$2" "$count" "$bin/iot-bench" dps --hub-dir "$work/hub" --count "$count" \
    --inflight "$inflight" --prefix "rs-$1-r$2" --transport "$1"
}
python_peer() { # round
  [ "$py_count" != 0 ] || return 0
  run python-mqtt "py-mqtt-r$1" "$py_count" "$venv/bin/python" "$peers/py_dps.py" "$py_count" "$inflight" "py-mqtt-r$1"
  [ -n "$py_wide" ] || return 0
  run python-mqtt-wide "py-wide-r$1" "$py_count" "$venv/bin/python" "$peers/py_dps.py" "$py_count" "$py_wide" "py-wide-r$1"
}
for round in $(seq 1 "$rounds"); do
  echo "== round $round"
  if [ $((round % 2)) = 1 ]; then
    ours mqtt "$round"
    [ "$https" = 0 ] || ours https "$round"
    python_peer "$round"
  else
    python_peer "$round"
    [ "$https" = 0 ] || ours https "$round"
    ours mqtt "$round"
  fi
done
echo "emulator RSS after the last run: $(awk '/VmRSS/ {print $2, $3}' "/proc/$hub_pid/status")"
# The hub must hold an identity for every assigned registration of every run.
while read -r label prefix assigned; do
  if ! "$bin/iot-bench" count-devices --hub-dir "$work/hub" --prefix "$prefix-" --expect "$assigned" >/dev/null 2>"$work/count"; then
    echo "$label ($prefix): hub identities do not match: $(grep -m1 assert "$work/count" || tail -n 1 "$work/count")"
    failures=$((failures + 1))
  fi
done < <(cat "$work/checks" 2>/dev/null)
echo "hub identities checked: $(wc -l <"$work/checks" 2>/dev/null || echo 0) runs; devices in the hub: $("$bin/iot-bench" count-devices --hub-dir "$work/hub" --prefix '')"
[ ! -f "$results" ] || python3 bench/dps_summary.py "$results"
[ "$failures" -eq 0 ]
