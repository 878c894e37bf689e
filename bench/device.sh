#!/usr/bin/env bash
# Device telemetry throughput: this project's client beside the official Python and Node
# device SDKs, all sending to the same emulator (`azure-iot hub start`, durable log) in the
# same run. 100-byte QoS 1 messages with two custom properties; `seq` awaits each
# acknowledgement, `conc` keeps 100 in flight. 3 rounds, alternating clients.
#
# Needs root: the official SDKs always dial port 8883. The peers are the project's own, in
# bench/peers: py_sdk.py and node/node_sdk.js drive the official SDKs, installed here on first
# use (Python into bench/.venv, Node into bench/peers/node/node_modules, both git-ignored and
# pinned: bench/peers/requirements.txt, node/package-lock.json); rustraw is the raw publisher.
# Prints one line per client and mode: its label, then the RESULT line of its driver (or
# FAILED and the driver's last error line; the script then ends with status 1).
#
# BROKER=mosquitto runs the same clients against Mosquitto over TLS instead (the setting of
# the issue's baseline figures): any key is accepted there, nothing is durable.
# TRANSPORT=https compares the HTTPS transports: this project's client over the device REST API
# beside the official Node SDK's azure-iot-device-http (both dial 443), 100 requests in flight.
# TRANSPORT=amqp compares the AMQP transports instead: this project's client over AMQP (and over
# MQTT, for reference) beside the official Node SDK's azure-iot-device-amqp (it dials 5671); the
# Python SDK (MQTT only) and the raw MQTT publisher are not run then, nor the memory rows.
# OLD_RUST=path/to/bench_telemetry adds that (older) build of our client to every round, for
# an old-vs-new comparison in the same run. SMALL=0 skips the `small` profile (its fat-LTO
# build takes several minutes) and its memory row.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-3}"
peers=bench/peers
# The official SDKs the peers drive, installed as conformance/run.sh installs its own.
venv=bench/.venv
command -v npm >/dev/null || { apt-get update -q && apt-get install -y -q nodejs npm; }
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$peers/requirements.txt"
# npm ci starts from an empty node_modules: only when the lock file changed since the last one.
[ "$peers/node/node_modules/.package-lock.json" -nt "$peers/node/package-lock.json" ] ||
  (cd "$peers/node" && npm ci --silent --no-audit --no-fund)

# Two commands: with `--example`, cargo builds only that example, not the `azure-iot` binary.
cargo build --release --locked -q -p azure_iot_cli
cargo build --release --locked -q -p azure_iot_device --example bench_telemetry
# The same example with the `small` profile (fat LTO, one codegen unit, panic=abort).
small="${SMALL:-1}"
[ "$small" = 0 ] || cargo build --profile small --locked -q -p azure_iot_device --example bench_telemetry
# The raw rumqttc publisher (the limit), adapted to take an IoT Hub identity: bench/peers/rustraw.
(cd bench/peers/rustraw && cargo build --release --locked -q)
raw=bench/peers/rustraw/target/release/rustraw
bin=target/release
work="$(mktemp -d)"
broker="${BROKER:-emulator}"
if [ "$broker" = mosquitto ]; then
  cargo build --release --locked -q -p azure_iot_bench
  # shellcheck source=bench/mosquitto.sh
  . bench/mosquitto.sh
  start_mosquitto "$work" 8883
  hub_pid=$MOSQUITTO_PID
  trap 'kill $hub_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
  echo "broker: mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}') over TLS on 8883"
  export CA_FILE="$work/mosquitto/ca.pem"
  key="$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')"
  cs_rust="HostName=localhost;DeviceId=bench-rust;SharedAccessKey=$key"
  cs_py="HostName=localhost;DeviceId=bench-py;SharedAccessKey=$key"
  cs_node="HostName=localhost;DeviceId=bench-node;SharedAccessKey=$key"
  cs_raw="HostName=localhost;DeviceId=bench-raw;SharedAccessKey=$key"
  raw_token=unused
else
"$bin/azure-iot" hub start --data-dir "$work/hub" >"$work/hub.log" 2>&1 &
hub_pid=$!
trap 'kill $hub_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 300); do [ -f "$work/hub/hub.json" ] && break; sleep 0.1; done

# One device per client, registered through the service REST API.
register() {
  python3 - "$work/hub" "$1" <<'PY'
import base64, hashlib, hmac, json, ssl, sys, time, urllib.parse, urllib.request
d, dev = sys.argv[1], sys.argv[2]
hub = json.load(open(d + "/hub.json"))
cs = dict(kv.split("=", 1) for kv in hub["connection_strings"]["iothubowner"].split(";"))
host = hub["hostname"]
sr = urllib.parse.quote(host, safe=""); se = str(int(time.time()) + 3600)
sig = base64.b64encode(hmac.new(base64.b64decode(cs["SharedAccessKey"]), f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
token = f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}&skn={cs['SharedAccessKeyName']}"
ctx = ssl.create_default_context(cafile=d + "/ca.pem")
req = urllib.request.Request(f"https://localhost:{hub['ports']['https']}/devices/{dev}?api-version=2021-04-12",
                             data=b"{}", method="PUT", headers={"Authorization": token, "Content-Type": "application/json"})
key = json.load(urllib.request.urlopen(req, context=ctx))["authentication"]["symmetricKey"]["primaryKey"]
print(f"HostName={host};DeviceId={dev};SharedAccessKey={key}")
PY
}
export CA_FILE="$work/hub/ca.pem"
cs_rust="$(register bench-rust)"; cs_py="$(register bench-py)"; cs_node="$(register bench-node)"
cs_raw="$(register bench-raw)"
# The raw publisher gets a SAS token (24 h) for its device, signed here.
raw_token="$(python3 - "$cs_raw" <<'PY'
import base64, hashlib, hmac, sys, time, urllib.parse
cs = dict(kv.split("=", 1) for kv in sys.argv[1].split(";"))
sr = urllib.parse.quote(f"{cs['HostName']}/devices/{cs['DeviceId']}", safe="")
se = str(int(time.time()) + 86400)
sig = base64.b64encode(hmac.new(base64.b64decode(cs["SharedAccessKey"]), f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
print(f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}")
PY
)"
  echo "broker: azure-iot hub start (durable telemetry log) on 8883"
fi
export CLIENT_ID=bench-raw USERNAME="localhost/bench-raw/?api-version=2021-04-12" PASSWORD="$raw_token" CLIENT_NODELAY=1

failures=0
run() { # label, connection string, command...
  local label="$1" cs="$2"; shift 2
  local line
  line="$(CS="$cs" T0_NS="$(date +%s%N)" "$@" 2>"$work/stderr" | grep '^RESULT ' | tail -n 1)" || true
  if [ -n "$line" ]; then
    echo "$label $line"
  else
    echo "$label FAILED: $(tail -n 1 "$work/stderr")"
    failures=$((failures + 1))
  fi
}
if [ "${TRANSPORT:-mqtt}" = https ]; then
  [ "$broker" = emulator ] || { echo "TRANSPORT=https needs the emulator (BROKER=emulator)"; exit 1; }
  for round in $(seq 1 "$rounds"); do
    echo "== round $round (HTTPS)"
    TRANSPORT=https run rust-https-seq "$cs_rust" "$bin/examples/bench_telemetry" seq 1000
    NODE_EXTRA_CA_CERTS="$CA_FILE" TRANSPORT=https run node-https-seq "$cs_node" node "$peers/node/node_sdk.js" seq 1000
    TRANSPORT=https run rust-https-conc "$cs_rust" "$bin/examples/bench_telemetry" conc 10000 100
    NODE_EXTRA_CA_CERTS="$CA_FILE" TRANSPORT=https run node-https-conc "$cs_node" node "$peers/node/node_sdk.js" conc 10000 100
  done
  [ "$failures" -eq 0 ]
  exit
fi
if [ "${TRANSPORT:-mqtt}" = amqp ]; then
  [ "$broker" = emulator ] || { echo "TRANSPORT=amqp needs the emulator (BROKER=emulator)"; exit 1; }
  for round in $(seq 1 "$rounds"); do
    echo "== round $round (AMQP)"
    TRANSPORT=mqtt run rust-mqtt-seq "$cs_rust" "$bin/examples/bench_telemetry" seq 3000
    TRANSPORT=amqp run rust-amqp-seq "$cs_rust" "$bin/examples/bench_telemetry" seq 3000
    TRANSPORT=amqp run node-amqp-seq "$cs_node" node "$peers/node/node_sdk.js" seq 3000
    TRANSPORT=mqtt run rust-mqtt-conc "$cs_rust" "$bin/examples/bench_telemetry" conc 30000 100
    TRANSPORT=amqp run rust-amqp-conc "$cs_rust" "$bin/examples/bench_telemetry" conc 30000 100
    TRANSPORT=amqp run node-amqp-conc "$cs_node" node "$peers/node/node_sdk.js" conc 30000 100
  done
  [ "$failures" -eq 0 ]
  exit
fi
for round in $(seq 1 "$rounds"); do
  echo "== round $round"
  run rust-seq "$cs_rust" "$bin/examples/bench_telemetry" seq 3000
  [ -z "${OLD_RUST:-}" ] || run rust-old-seq "$cs_rust" "$OLD_RUST" seq 3000
  run raw-seq "$cs_raw" "$raw" tls seq 3000
  run python-sync "$cs_py" "$venv/bin/python" "$peers/py_sdk.py" sync 2000
  run node-seq "$cs_node" node "$peers/node/node_sdk.js" seq 3000
  run rust-conc "$cs_rust" "$bin/examples/bench_telemetry" conc 30000 100
  [ -z "${OLD_RUST:-}" ] || run rust-old-conc "$cs_rust" "$OLD_RUST" conc 30000 100
  run raw-pipe "$cs_raw" "$raw" tls pipe 30000 100
  run python-async "$cs_py" "$venv/bin/python" "$peers/py_sdk.py" async 2000 100
  run node-conc "$cs_node" node "$peers/node/node_sdk.js" conc 30000 100
  run rust-mem10k "$cs_rust" "$bin/examples/bench_telemetry" seq 10000
  [ "$small" = 0 ] || run rust-small-mem10k "$cs_rust" target/small/examples/bench_telemetry seq 10000
  run raw-mem10k "$cs_raw" "$raw" tls seq 10000
done
[ "$failures" -eq 0 ]
