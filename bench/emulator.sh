# Sourced by the bench scripts that run official SDKs against one release emulator.
#
# `require_free_ports WHO PORT…`: ends the script unless every PORT is free on 127.0.0.1 (the
# official SDKs dial fixed ports; a listener on another loopback address does not matter).
#
# `install_official_sdks`: the official Python SDKs the peers drive, in the git-ignored
# virtual environment bench/.venv, pinned by bench/peers/requirements.txt.
#
# `start_emulator BIN WORK [ARG…]`: starts BIN/azure-iot `hub start` on the fresh data directory
# WORK/hub (log in WORK/hub.log) with the extra ARGs, waits for its hub.json, sets HUB_PID, and
# stops it and removes WORK when the script exits.
require_free_ports() {
  local who="$1" port
  shift
  for port in "$@"; do
    if ss -ltnH "sport = :$port" | awk '{print $4}' | grep -qE '^(127\.0\.0\.1|0\.0\.0\.0|\*|\[::\]):'; then
      echo "$who: port $port of 127.0.0.1 is in use; the official SDKs dial fixed ports" >&2
      exit 1
    fi
  done
}

install_official_sdks() {
  [ -x bench/.venv/bin/python ] || python3 -m venv bench/.venv
  bench/.venv/bin/pip install --quiet --disable-pip-version-check -r bench/peers/requirements.txt
}

start_emulator() {
  local bin="$1" work="$2"
  shift 2
  "$bin/azure-iot" hub start --data-dir "$work/hub" "$@" >"$work/hub.log" 2>&1 &
  HUB_PID=$!
  # shellcheck disable=SC2064 # the pid and the directory are fixed now
  trap "kill $HUB_PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf '$work'" EXIT
  for _ in $(seq 1 300); do [ -f "$work/hub/hub.json" ] && break; sleep 0.1; done
  [ -f "$work/hub/hub.json" ] || { cat "$work/hub.log"; echo "the emulator did not start" >&2; exit 1; }
}
