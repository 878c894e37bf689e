#!/usr/bin/env bash
# Reproduces the emulator figures in BENCHMARKS.md:
#   ingest      100 TLS connections x 2,000 100-byte QoS 1 messages, 100 in flight each,
#               against the emulator (durable log) and Mosquitto (not durable), same generator,
#               alternating, 3 rounds;
#   connections 10,000 idle MQTT/TLS device connections held; connects/s, server memory each;
#   methods     1,000 devices connected; 2,000 direct methods through the REST API, p50/p99.
# Needs root (apt-get, file-descriptor limits). Release build first. Prints RESULT lines.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-3}"

cargo build --release --locked -p azure_iot_cli -p azure_iot_bench
ulimit -n "$(ulimit -Hn)"
bin=target/release
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin/azure-iot" hub start --data-dir "$work/hub" --https-port 18443 --mqtt-port 18883 --amqp-port 15671 >"$work/hub.log" 2>&1 &
hub_pid=$!; pids+=("$hub_pid")
for _ in $(seq 1 300); do [ -f "$work/hub/hub.json" ] && break; sleep 0.1; done

# shellcheck source=bench/mosquitto.sh
. bench/mosquitto.sh
start_mosquitto "$work" 28883
pids+=("$MOSQUITTO_PID")

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}')"
for round in $(seq 1 "$rounds"); do
  echo "round $round"
  "$bin/iot-bench" ingest --hub-dir "$work/hub" --connections 100 --messages 2000 --inflight 100
  "$bin/iot-bench" ingest --broker localhost:28883 --ca "$work/mosquitto/ca.pem" --connections 100 --messages 2000 --inflight 100
done
"$bin/iot-bench" connections --hub-dir "$work/hub" --count "${CONNECTIONS:-10000}" --pid "$hub_pid"
"$bin/iot-bench" methods --hub-dir "$work/hub" --devices 1000 --calls 2000
