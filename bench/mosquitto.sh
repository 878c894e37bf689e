# Sourced by the bench scripts: `start_mosquitto DIR PORT` starts Mosquitto over TLS on
# 127.0.0.1:PORT with a CA and server certificate for localhost in DIR/mosquitto (from
# `iot-bench gen-cert`, so target/release/iot-bench must be built), tuned as a fair peer
# (TCP_NODELAY, no persistence, no in-flight limit), and sets MOSQUITTO_PID.
start_mosquitto() {
  local dir="$1" port="$2"
  command -v mosquitto >/dev/null || { apt-get update -q && apt-get install -y -q mosquitto; }
  target/release/iot-bench gen-cert "$dir/mosquitto"
  # Mosquitto started as root drops to its own user, which must be able to read its files.
  chmod 755 "$dir" "$dir/mosquitto" && chmod 644 "$dir"/mosquitto/*
  cat >"$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
cafile $dir/mosquitto/ca.pem
certfile $dir/mosquitto/server.pem
keyfile $dir/mosquitto/server-key.pem
allow_anonymous true
set_tcp_nodelay true
persistence false
max_inflight_messages 0
max_queued_messages 100000
CONF
  mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
  MOSQUITTO_PID=$!
  for _ in $(seq 1 50); do grep -q "running" "$dir/mosquitto.log" 2>/dev/null && break; sleep 0.1; done
}
