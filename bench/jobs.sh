#!/usr/bin/env bash
# A twin-update job over N devices (default 10,000): time from the job's creation to its
# completion, figures in BENCHMARKS.md. The emulator keeps state on disk (every chunk of twins
# and device-job rows is committed before it counts); devices are registered with bulk calls
# first, and the job targets all of them (`IS_DEFINED(deviceId)`). ROUNDS rounds, each on a
# fresh data directory. Release build first (BIN=dir skips it). Prints RESULT lines.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-3}"
devices="${DEVICES:-10000}"
bin="${BIN:-target/release}"
[ -n "${BIN:-}" ] || cargo build --release --locked -p azure_iot_cli
work="$(mktemp -d)"
hub_pid=""
cleanup() { [ -z "$hub_pid" ] || kill "$hub_pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), $(df -T "$work" | awk 'NR==2{print $2}') on $(df "$work" | awk 'NR==2{print $1}')"
for round in $(seq 1 "$rounds"); do
  dir="$work/round-$round"
  "$bin/azure-iot" hub start --data-dir "$dir" --https-port 29443 --mqtt-port 29883 --amqp-port 29671 --blob-port 29000 >"$dir.log" 2>&1 &
  hub_pid=$!
  for _ in $(seq 1 300); do [ -f "$dir/hub.json" ] && break; sleep 0.1; done
  [ -f "$dir/hub.json" ] || { echo "the emulator did not start: $(cat "$dir.log")" >&2; exit 1; }
  python3 bench/jobs_driver.py "$dir" "$devices" "bench-$round"
  kill "$hub_pid"; wait "$hub_pid" 2>/dev/null || true; hub_pid=""
done
