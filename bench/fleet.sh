#!/usr/bin/env bash
# Fleets from one process: `azure-iot device simulate --devices N` against the emulator
# (`azure-iot hub start`, both release builds) for N = 1,000 and 10,000, over AMQP
# (multiplexed, 999 devices per connection, as IoT Hub allows) and over MQTT (a connection
# per device). Per run: the time to connect every device, the client's memory per device
# (its RSS once all are connected, less its RSS before the first connect, over N), the
# emulator's memory per device (its peak RSS during the run less its RSS before, over N),
# the aggregate rate while every device sends COUNT messages as fast as acknowledgements
# allow (one in flight per device), and the acknowledgement latency. Each run has an emulator
# of its own; the emulator's figure includes creating the run's devices in its registry.
#
# FLEETS="1000 10000" TRANSPORTS="amqp mqtt" COUNT=10 ROUNDS=1 override the defaults.
# Prints one line per run; the simulator's JSON summary is kept in $OUT (default
# bench/fleet-results.jsonl, git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
fleets="${FLEETS:-1000 10000}"
transports="${TRANSPORTS:-amqp mqtt}"
count="${COUNT:-10}"
rounds="${ROUNDS:-1}"
out="${OUT:-bench/fleet-results.jsonl}"
cargo build --release --locked -q -p azure_iot_cli
bin=target/release/azure-iot
work="$(mktemp -d)"
hub_pid=
cleanup() { [ -z "$hub_pid" ] || kill "$hub_pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# A fresh emulator for every run (its RSS before the run is its baseline): the run creates
# its devices first. 10,000 MQTT devices are 10,000 connections on one listener: more than the
# default share of the open-file limit.
start_hub() {
  rm -rf "$work/hub"
  "$bin" hub start --data-dir "$work/hub" --https-port 0 --mqtt-port 0 --amqp-port 0 \
    --max-connections 12000 >"$work/hub.log" 2>&1 &
  hub_pid=$!
  for _ in $(seq 1 100); do [ -f "$work/hub/hub.json" ] && break; sleep 0.1; done
  [ -f "$work/hub/hub.json" ] || { cat "$work/hub.log"; echo "the emulator did not start"; exit 1; }
}
stop_hub() { kill "$hub_pid" 2>/dev/null || true; wait "$hub_pid" 2>/dev/null || true; hub_pid=; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
: >"$out"

for round in $(seq 1 "$rounds"); do
  for n in $fleets; do
    for transport in $transports; do
      start_hub
      before=$(rss_kib "$hub_pid")
      peak_file="$work/peak"
      echo "$before" >"$peak_file"
      # The emulator's peak RSS while the run lasts.
      ( peak=$before
        while kill -0 "$hub_pid" 2>/dev/null; do
          now=$(rss_kib "$hub_pid"); [ "$now" -gt "$peak" ] && peak=$now && echo "$peak" >"$peak_file"
          sleep 0.2
        done ) &
      sampler=$!
      set +e
      summary=$("$bin" device simulate --data-dir "$work/hub" --devices "$n" --device-prefix "fleet-" \
        --transport "$transport" --count "$count" --connect-concurrency 200 --output json 2>"$work/err")
      status=$?
      set -e
      kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
      peak=$(cat "$peak_file")
      stop_hub
      if [ "$status" -ne 0 ] || [ -z "$summary" ]; then
        echo "round $round: $n devices over $transport: FAILED: $(tail -n 1 "$work/err")"
        continue
      fi
      echo "$summary" | python3 -c "
import json, sys
s = json.load(sys.stdin)
n, before, peak = s['devices'], $before, $peak
rss = s['rss_bytes']
client = (rss['connected'] - rss['before_connect']) / 1024 / max(s['connected'], 1)
s['emulator_rss_kib'] = {'before': before, 'peak': peak}
print(json.dumps(s), file=open('$out', 'a'))
print(f\"round $round: {n:>6} devices over {s['transport']:<7} {s['connections']:>5} connections  \"
      f\"connected {s['connected']} in {s['connect_seconds']:.2f} s  client {client:.1f} KiB/device  \"
      f\"emulator {(peak - before) / max(s['connected'], 1):.1f} KiB/device  \"
      f\"{s['acknowledged']} acked, {s['failed']} failed, {s['msgs_per_second']:.0f} msgs/s  \"
      f\"p50 {s['latency_ms']['p50']:.1f} ms  p99 {s['latency_ms']['p99']:.1f} ms\")
"
    done
  done
done
