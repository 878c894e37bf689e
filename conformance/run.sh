#!/usr/bin/env bash
# Runs the official SDKs' conformance scenarios against `azure-iot hub start`.
# Installs what it needs into conformance/.venv (git-ignored). Needs port 443 free (the
# official service SDKs always dial https://{hostname}:443), so it runs as root in CI.
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

(cd "$root" && cargo build --quiet --locked -p azure_iot_cli)
bin="$root/target/debug/azure-iot"

data="$(mktemp -d)"
log="$data/emulator.log"
"$bin" hub start --in-memory --data-dir "$data" >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT

for _ in $(seq 1 300); do
  [ -f "$data/hub.json" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then cat "$log"; echo "the emulator exited"; exit 1; fi
  sleep 0.1
done
[ -f "$data/hub.json" ] || { cat "$log"; echo "the emulator did not start"; exit 1; }

status=0
HUB_JSON="$data/hub.json" REQUESTS_CA_BUNDLE="$data/ca.pem" \
  "$venv/bin/python" "$here/python/registry_manager.py" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- emulator log ---"; cat "$log"
fi
exit "$status"
