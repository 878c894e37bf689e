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

command -v mosquitto >/dev/null || { apt-get update -q && apt-get install -y -q mosquitto; }
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

"$bin/iot-bench" gen-cert "$work/mosquitto"
# Mosquitto started as root drops to its own user, which must be able to read its files.
chmod 755 "$work" "$work/mosquitto" && chmod 644 "$work"/mosquitto/*
cat >"$work/mosquitto.conf" <<CONF
listener 28883 127.0.0.1
cafile $work/mosquitto/ca.pem
certfile $work/mosquitto/server.pem
keyfile $work/mosquitto/server-key.pem
allow_anonymous true
set_tcp_nodelay true
persistence false
max_inflight_messages 0
max_queued_messages 100000
CONF
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 50); do grep -q "running" "$work/mosquitto.log" 2>/dev/null && break; sleep 0.1; done

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}')"
for round in $(seq 1 "$rounds"); do
  echo "round $round"
  "$bin/iot-bench" ingest --hub-dir "$work/hub" --connections 100 --messages 2000 --inflight 100
  "$bin/iot-bench" ingest --broker localhost:28883 --ca "$work/mosquitto/ca.pem" --connections 100 --messages 2000 --inflight 100
done
"$bin/iot-bench" connections --hub-dir "$work/hub" --count "${CONNECTIONS:-10000}" --pid "$hub_pid"
"$bin/iot-bench" methods --hub-dir "$work/hub" --devices 1000 --calls 2000
