#!/usr/bin/env bash
# Runs the official SDKs' conformance scenarios against `azure-iot hub start`.
# Installs what it needs into conformance/.venv (git-ignored). Needs ports 443, 8883, 5671 and
# 10000 free (the official SDKs always dial https://{hostname}:443 and mqtts://{hostname}:8883;
# uploads go to the blob endpoint, whose port is in the hostName the hub hands out), so it runs
# as root in CI.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "conformance: skipped, it needs port 443 (the official SDKs always dial it): run as root"
  exit 0
fi
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$here/.venv"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt"
# The Node SDK scenarios run when node is on the PATH (CI installs it); packages go into
# conformance/node/node_modules (git-ignored), pinned by package-lock.json. --ignore-scripts:
# no package needs its install script (es5-ext's only prints a message; ffi-napi and ref-napi,
# which tss.js loads only for Windows' TBS, do not build on current Node; see node/tpm.js).
# service_to_rust_device.py runs once per transport of our device client (`@amqp` suffix).
scenarios="python/registry_manager.py python/device_mqtt.py python/service_to_rust_device.py python/service_to_rust_device.py@amqp python/rust_service_to_device.py python/file_upload.py python/dps_device.py python/eventhubs_consumer.py python/jobs.py python/configurations.py"
if command -v npm >/dev/null 2>&1; then
  (cd "$here/node" && npm ci --silent --no-audit --no-fund --ignore-scripts)
  scenarios="$scenarios node/scenarios.js node/dps.js node/tpm.js node/eventhubs.js node/jobs.js node/configurations.js"
else
  echo "conformance: node not found, the Node SDK scenarios are skipped"
fi

(cd "$root" && cargo build --quiet --locked -p azure_iot_cli && cargo build --quiet --locked -p azure_iot_device --example echo_device)
bin="$root/target/debug/azure-iot"

# Python scenarios that also pass with this project's Python package (azure_iot_rs) swapped in
# by import (CONFORMANCE_PY_SDK, read by python/harness.py); the others are listed with why in
# docs/CONFORMANCE.md. Their checks fill the "azure_iot_rs: …" columns of the table.
swapped="python/registry_manager.py python/file_upload.py python/rust_service_to_device.py python/service_to_rust_device.py python/service_to_rust_device.py@amqp python/dps_device.py python/jobs.py python/configurations.py"
# The package's wheel (debug), installed beside the official SDKs.
"$venv/bin/pip" install --quiet --disable-pip-version-check maturin==1.16.0
wheels="$(mktemp -d)"
(cd "$root/python" && "$venv/bin/maturin" build --quiet --locked --out "$wheels")
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheels"/azure_iot_rs-*.whl
rm -rf "$wheels"

results="$(mktemp)"
data=""
pid=""
azurite_pid=""
# For the Azurite pass: a data directory prepared before the hub starts, and `hub start` flags.
preset_data=""
hub_args=()
cleanup() {
  [ -z "$pid" ] || { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  [ -z "$azurite_pid" ] || { kill "$azurite_pid" 2>/dev/null || true; wait "$azurite_pid" 2>/dev/null || true; }
  rm -rf "$data" "$preset_data" "$results"
}
trap cleanup EXIT

# A fresh emulator for each pass (the scenarios use fixed device ids). State on disk (not
# --in-memory): scenarios read the durable telemetry log to check what the hub accepted.
start_hub() {
  cleanup_hub
  data="${preset_data:-$(mktemp -d)}"
  preset_data=""
  log="$data/emulator.log"
  "$bin" hub start --data-dir "$data" "${hub_args[@]}" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    [ -f "$data/hub.json" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then cat "$log"; echo "the emulator exited"; exit 1; fi
    sleep 0.1
  done
  [ -f "$data/hub.json" ] || { cat "$log"; echo "the emulator did not start"; exit 1; }
}
cleanup_hub() {
  [ -z "$pid" ] || { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  [ -z "$data" ] || rm -rf "$data"
  pid=""; data=""
}

passed=0
failed=0
run_pass() { # CONFORMANCE_PY_SDK value ("" for the official SDKs), scenarios...
  local swap="$1"; shift
  start_hub
  local pass_failed=0
  for scenario in "$@"; do
    echo "== conformance${swap:+ ($swap swapped in)}: $scenario"
    out="$data/$(basename "$scenario").out"
    transport=mqtt
    case "$scenario" in
      *@*) transport="${scenario#*@}"; scenario="${scenario%@*}"; out="$out.$transport" ;;
    esac
    case "$scenario" in
      *.py) runner=("$venv/bin/python") ;;
      *.js) runner=(node) ;;
    esac
    set +e
    HUB_JSON="$data/hub.json" DATA_DIR="$data" REQUESTS_CA_BUNDLE="$data/ca.pem" \
      NODE_EXTRA_CA_CERTS="$data/ca.pem" AZURE_IOT_BIN="$bin" CONFORMANCE_RESULTS="$results" \
      RUST_DEVICE_TRANSPORT="$transport" CONFORMANCE_PY_SDK="$swap" CONFORMANCE_PYTHON="$venv/bin/python" \
      "${runner[@]}" "$here/$scenario" 2>&1 | tee "$out"
    set -e
    summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)"
    if [ -z "$summary" ]; then
      echo "$scenario did not finish"; failed=$((failed + 1)); pass_failed=1; continue
    fi
    passed=$((passed + ${summary%% passed*}))
    f="${summary#*, }"; failed=$((failed + ${f%% failed*}))
    [ "${f%% failed*}" -eq 0 ] || pass_failed=1
  done
  if [ "$pass_failed" -ne 0 ]; then
    echo "--- emulator log ---"; cat "$log"
  fi
}
# shellcheck disable=SC2086 # word splitting intended: lists of scenarios
run_pass "" $scenarios
# shellcheck disable=SC2086
run_pass azure_iot_rs $swapped
# The hub's own notifications on the built-in endpoint: a pass whose emulator routes them (off
# above, as on a new hub, so that the other scenarios' partitions hold only telemetry).
hub_args=(--route-events all)
run_pass "" python/eh_events.py
hub_args=()
# File upload with Azurite as the blob service (ADR 25): Azurite over HTTPS on a free port with a
# certificate from the emulator's CA (written into the data directory first, so the emulator
# reuses it and every SDK that trusts ca.pem verifies Azurite too), the hub in storage-account
# mode. Azurite comes from conformance/node (package.json), so this pass needs node.
azurite_bin="$here/node/node_modules/.bin/azurite-blob"
if [ -x "$azurite_bin" ]; then
  cleanup_hub
  preset_data="$(mktemp -d)"
  "$venv/bin/python" "$here/python/azurite.py" certs "$preset_data"
  azurite_port="$("$venv/bin/python" "$here/python/azurite.py" free-port)"
  mkdir "$preset_data/azurite"
  "$azurite_bin" --blobHost 127.0.0.1 --blobPort "$azurite_port" --cert "$preset_data/azurite.pem" \
    --key "$preset_data/azurite.key" --location "$preset_data/azurite" --skipApiVersionCheck --loose --disableTelemetry \
    --silent >"$preset_data/azurite.log" 2>&1 &
  azurite_pid=$!
  "$venv/bin/python" "$here/python/azurite.py" wait "$azurite_port"
  AZURITE_CONNECTION_STRING="$("$venv/bin/python" "$here/python/azurite.py" connection-string "$azurite_port")"
  STORAGE_CONTAINER=iot-uploads
  export AZURITE_CONNECTION_STRING STORAGE_CONTAINER
  hub_args=(--storage-container "$STORAGE_CONTAINER")
  AZURE_IOT_STORAGE_CONNECTION_STRING="$AZURITE_CONNECTION_STRING" run_pass "" python/file_upload_azurite.py
  hub_args=()
  cleanup_hub
  kill "$azurite_pid" 2>/dev/null || true; wait "$azurite_pid" 2>/dev/null || true; azurite_pid=""
else
  echo "conformance: azurite not installed (conformance/node), the Azurite file-upload pass is skipped"
fi
cleanup_hub
# The scenario × client × transport table in docs/CONFORMANCE.md.
python3 "$here/table.py" "$results" "$root/docs/CONFORMANCE.md"
echo "conformance: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
