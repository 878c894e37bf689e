#!/usr/bin/env bash
# The cost of `--durability full` (synchronous=FULL: an fsync per acknowledged write) against
# the default `process` (synchronous=NORMAL), figures in BENCHMARKS.md:
#   ingest  C TLS connections x M 100-byte QoS 1 messages, W in flight each (each PUBACK waits
#           for its message's commit), alternating the two modes, ROUNDS rounds;
#   serial  1 connection, 1 in flight: the per-message latency an fsync adds.
# Release build first. Prints RESULT lines, each preceded by the mode.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-3}"
bin="${BIN:-target/release}"
[ -n "${BIN:-}" ] || cargo build --release --locked -p azure_iot_cli -p azure_iot_bench
ulimit -n "$(ulimit -Hn)"
work="$(mktemp -d)"
hub_pid=""
cleanup() { [ -z "$hub_pid" ] || kill "$hub_pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

start_hub() { # mode dir
  "$bin/azure-iot" hub start --data-dir "$2" --durability "$1" --https-port 19443 --mqtt-port 19883 --amqp-port 19671 >"$2.log" 2>&1 &
  hub_pid=$!
  for _ in $(seq 1 300); do [ -f "$2/hub.json" ] && return; sleep 0.1; done
  echo "the emulator did not start: $(cat "$2.log")" >&2; exit 1
}
stop_hub() { kill "$hub_pid"; wait "$hub_pid" 2>/dev/null || true; hub_pid=""; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), $(df -T "$work" | awk 'NR==2{print $2}') on $(df "$work" | awk 'NR==2{print $1}')"
for round in $(seq 1 "$rounds"); do
  for mode in process full; do
    start_hub "$mode" "$work/$mode-$round"
    echo "round $round $mode ingest"
    "$bin/iot-bench" ingest --hub-dir "$work/$mode-$round" --connections "${CONNECTIONS:-100}" --messages "${MESSAGES:-1000}" --inflight "${INFLIGHT:-100}"
    echo "round $round $mode serial"
    "$bin/iot-bench" ingest --hub-dir "$work/$mode-$round" --connections 1 --messages "${SERIAL:-500}" --inflight 1
    stop_hub
  done
done
