#!/usr/bin/env bash
# Reproduces the emulator figures in BENCHMARKS.md:
#   ingest      100 TLS connections x 2,000 100-byte QoS 1 messages, 100 in flight each,
#               against the emulator (durable log) and Mosquitto (not durable), same generator,
#               alternating, 3 rounds;
#   connections CONNECTIONS (10,000) idle MQTT/TLS device connections held, from source
#               addresses 127.0.0.1.. (25,000 each); connects/s, server memory each, and one
#               more device's connect time while all are held (median of 9);
#   methods     1,000 devices connected; 2,000 direct methods through the REST API, p50/p99.
# Needs root (apt-get, file-descriptor limits). Release build first. Prints RESULT lines.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-3}"

cargo build --release --locked -p azure_iot_cli -p azure_iot_bench
# Every held connection is a descriptor in the hub and one in the load generator: raise the
# hard limit (root) as far as CONNECTIONS needs, then the soft limit to it, for both.
connections="${CONNECTIONS:-10000}"
need=$((connections + 1024))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$need" ]; then
  ulimit -Hn "$need" 2>/dev/null || echo "warning: open-file hard limit $(ulimit -Hn) < $need (no CAP_SYS_RESOURCE?); connections will fail past it" >&2
fi
ulimit -n "$(ulimit -Hn)"
if [ "$(sysctl -n fs.nr_open)" -lt "$need" ]; then echo "warning: fs.nr_open $(sysctl -n fs.nr_open) < $need" >&2; fi
read -r port_lo port_hi < <(sysctl -n net.ipv4.ip_local_port_range)
if [ $((port_hi - port_lo + 1)) -lt 25000 ]; then echo "warning: ip_local_port_range has fewer than 25,000 ports per source address" >&2; fi
bin=target/release
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin/azure-iot" hub start --data-dir "$work/hub" --https-port 18443 --mqtt-port 18883 --amqp-port 15671 --max-connections "$((connections + 64))" >"$work/hub.log" 2>&1 &
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
"$bin/iot-bench" connections --hub-dir "$work/hub" --count "$connections" --per-source 25000 --pid "$hub_pid"
"$bin/iot-bench" methods --hub-dir "$work/hub" --devices 1000 --calls 2000
