#!/usr/bin/env bash
# File upload of one large file (default 1 GiB of random bytes): this project's
# `azure-iot device upload` beside the official Python SDKs' flow (bench/peers/py_upload.py:
# azure-iot-device + azure-storage-blob, the samples' way), to the emulator's built-in blob
# endpoint and, when Azurite is installed (conformance/node), to Azurite through the hub's
# storage-account mode (ADR 25). Rounds alternate the clients. For each upload: MiB/s (ours:
# the CLI's own figure, from the SAS request to the notification's answer; Python: the same
# span), the client's peak RSS, and the emulator's RSS and peak RSS (VmHWM) after it — the blob
# endpoint streams to disk, so the emulator's memory must not grow with the file.
#
# Needs root (the official SDK dials port 443). ROUNDS=3 SIZE_MIB=1024 AZURITE=1 by default;
# VENV=path uses an existing virtualenv holding bench/peers/requirements.txt. Release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-3}"
size_mib="${SIZE_MIB:-1024}"
venv="${VENV:-bench/.venv}"
if [ -z "${VENV:-}" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/peers/requirements.txt
fi
target="${CARGO_TARGET_DIR:-target}"
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -q -p azure_iot_cli
bin="$target/release/azure-iot"
work="$(mktemp -d)"
hub_pid=""; azurite_pid=""
cleanup() {
  [ -z "$hub_pid" ] || { kill "$hub_pid" 2>/dev/null || true; wait "$hub_pid" 2>/dev/null || true; }
  [ -z "$azurite_pid" ] || { kill "$azurite_pid" 2>/dev/null || true; wait "$azurite_pid" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$work/big.bin"

start_hub() { # data dir, extra `hub start` flags...
  local data="$1"; shift
  "$bin" hub start --data-dir "$data" "$@" >"$data/emulator.log" 2>&1 &
  hub_pid=$!
  for _ in $(seq 1 300); do [ -f "$data/hub.json" ] && break; sleep 0.1; done
  [ -f "$data/hub.json" ] || { cat "$data/emulator.log"; exit 1; }
  "$bin" device create -d up --data-dir "$data" >/dev/null
}
stop_hub() {
  kill "$hub_pid"; wait "$hub_pid" 2>/dev/null || true; hub_pid=""
}
memory() { # "rss_kib peak_kib" of the emulator
  awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {print r, h}' "/proc/$hub_pid/status"
}
rounds_against() { # label, data dir
  local label="$1" data="$2" cs
  cs="$("$bin" device connection-string -d up --data-dir "$data")"
  echo "$label: emulator after start: RSS/peak $(memory) KiB"
  for round in $(seq 1 "$rounds"); do
    out="$(/usr/bin/time -f 'MAXRSS %M' "$bin" device upload -d up -f "$work/big.bin" --name big.bin --data-dir "$data" 2>&1)"
    echo "$label round $round rust: $(grep -o '([0-9.]* MiB/s)' <<<"$out") client peak $(grep -o 'MAXRSS [0-9]*' <<<"$out" | cut -d' ' -f2) KiB; emulator RSS/peak $(memory) KiB"
    out="$(CS="$cs" CA_FILE="$data/ca.pem" REQUESTS_CA_BUNDLE="$data/ca.pem" "$venv/bin/python" bench/peers/py_upload.py "$work/big.bin" big-py.bin)"
    echo "$label round $round python: $(grep '^RESULT' <<<"$out"); emulator RSS/peak $(memory) KiB"
  done
}

data="$work/builtin"; mkdir "$data"
start_hub "$data"
rounds_against built-in "$data"
stop_hub

azurite_bin=conformance/node/node_modules/.bin/azurite-blob
if [ "${AZURITE:-1}" = 1 ] && [ -x "$azurite_bin" ]; then
  data="$work/azurite"; mkdir -p "$data/store"
  "$venv/bin/python" conformance/python/azurite.py certs "$data"
  port="$("$venv/bin/python" conformance/python/azurite.py free-port)"
  "$azurite_bin" --blobHost 127.0.0.1 --blobPort "$port" --cert "$data/azurite.pem" --key "$data/azurite.key" \
    --location "$data/store" --skipApiVersionCheck --loose --disableTelemetry --silent >"$data/azurite.log" 2>&1 &
  azurite_pid=$!
  "$venv/bin/python" conformance/python/azurite.py wait "$port"
  AZURE_IOT_STORAGE_CONNECTION_STRING="$("$venv/bin/python" conformance/python/azurite.py connection-string "$port")" \
    start_hub "$data"
  rounds_against azurite "$data"
  stop_hub
  echo "azurite peak RSS: $(awk '/^VmHWM/ {print $2}' "/proc/$azurite_pid/status") KiB"
fi
