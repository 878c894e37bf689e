#!/usr/bin/env bash
# Reading N events (default 1,000,000) from the emulator's Event Hubs-compatible endpoint, from
# the start of every partition, with this project's EventHubConsumer (`iot-bench eventhubs`),
# the official Python azure-eventhub (receive_batch and receive) and the official Node
# @azure/event-hubs; figures in BENCHMARKS.md.
#
# One release emulator (state on disk, 4 partitions, 1 GiB of log kept, loopback ports 29443/29883/29671/29000 so
# that it does not need the official ports) is filled once with `iot-bench ingest` (100 devices
# × N/100 QoS 1 messages of 100 bytes with two application properties; not what is measured),
# then every reader reads all of it, ROUNDS rounds, readers alternating within a round. For
# each read: events/s, time to the first event (RESULT lines of the readers), and the
# emulator's CPU time (utime+stime from /proc) and peak RSS (VmHWM, reset through
# /proc/PID/clear_refs before each read; needs root) while serving it.
#
# Release build first, under the machine's cargo lock (BIN=dir skips it). The official SDKs
# go into bench/.venv and bench/peers/node/node_modules as bench/device.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/emulator.sh
source bench/emulator.sh
rounds="${ROUNDS:-3}"
events="${EVENTS:-1000000}"
readers="${READERS:-rust python-batch python-single node}"
bin="${BIN:-target/release}"
peers=bench/peers
[ -n "${BIN:-}" ] || flock /tmp/cargo.lock cargo build --release --locked -p azure_iot_cli -p azure_iot_bench

command -v npm >/dev/null || { apt-get update -q && apt-get install -y -q nodejs npm; }
install_official_sdks
[ "$peers/node/node_modules/.package-lock.json" -nt "$peers/node/package-lock.json" ] ||
  (cd "$peers/node" && npm ci --silent --no-audit --no-fund)

work="$(mktemp -d)"
start_emulator "$bin" "$work" --https-port 29443 --mqtt-port 29883 --amqp-port 29671 --blob-port 29000 --telemetry-max-mb 1024
hub="$work/hub"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), $(df -T "$work" | awk 'NR==2{print $2}') on $(df "$work" | awk 'NR==2{print $1}')"
echo "emulator: $("$bin/azure-iot" --version 2>/dev/null || echo azure-iot) at $(git rev-parse --short HEAD)"

connections=100
"$bin/iot-bench" ingest --hub-dir "$hub" --connections "$connections" --messages $((events / connections)) --inflight 100 |
  sed 's/^RESULT /FILL /'
echo "log: $(du -sh "$hub" | cut -f1) in $hub"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$HUB_PID/stat"; }
hz=$(getconf CLK_TCK)
read_once() {
  local reader="$1" out t0 c0 c1 t1
  echo 5 >"/proc/$HUB_PID/clear_refs"
  c0=$(cpu_ticks)
  t0=$(date +%s.%N)
  case "$reader" in
  rust) out=$("$bin/iot-bench" eventhubs --hub-dir "$hub") ;;
  python-batch) out=$(bench/.venv/bin/python "$peers/py_eventhubs.py" "$hub" batch) ;;
  python-single) out=$(bench/.venv/bin/python "$peers/py_eventhubs.py" "$hub" single) ;;
  node) out=$(NODE_EXTRA_CA_CERTS="$hub/ca.pem" node "$peers/node/eventhubs.js" "$hub") ;;
  esac
  t1=$(date +%s.%N)
  c1=$(cpu_ticks)
  echo "$out" | grep '^RESULT ' | sed "s/}\$/, \"round\": $round, \"reader\": \"$reader\", \"emulator_cpu_s\": $(echo "($c1 - $c0) / $hz" | bc -l | xargs printf '%.2f'), \"emulator_cpu_pct\": $(echo "100 * ($c1 - $c0) / $hz / ($t1 - $t0)" | bc -l | xargs printf '%.0f'), \"emulator_peak_rss_mib\": $(awk '/VmHWM/{printf "%.1f", $2 / 1024}' "/proc/$HUB_PID/status")}/"
}
for round in $(seq 1 "$rounds"); do
  for reader in $readers; do read_once "$reader"; done
done
