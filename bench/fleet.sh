#!/usr/bin/env bash
# Fleet benchmark: N virtual units (`pepeunit-unit simulate`, one MQTT connection each) against the embedded
# broker of a release `pepeunit` on SQLite, then a fleet-wide update of all of them by a rollout in waves.
# Prints the simulator's report: connects, messages sent/received over output→input links and their
# latency, the rollout time, and the RSS of the server and of the simulator per unit.
#
#   bench/fleet.sh                                  # 1,000 units, 1 msg/s each, 30 s, waves of 100
#   UNITS=200 RATE=2 DURATION=20 BATCH=50 bench/fleet.sh
#   PEPEUNIT_BIN=... PEPEUNIT_UNIT_BIN=... bench/fleet.sh   # use these binaries instead of building
set -euo pipefail
cd "$(dirname "$0")/.."

UNITS="${UNITS:-1000}"
RATE="${RATE:-1}"
DURATION="${DURATION:-30}"
BATCH="${BATCH:-100}"
WAVE_TIMEOUT="${WAVE_TIMEOUT:-120}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pepeunit-target}"
PASSWORD=bench-password-1

if [ -z "${PEPEUNIT_BIN:-}" ] || [ -z "${PEPEUNIT_UNIT_BIN:-}" ]; then
  cargo build --release --locked -p pepeunit-backend -p pepeunit-unit-runtime --quiet
fi
SERVER_BIN="${PEPEUNIT_BIN:-$CARGO_TARGET_DIR/release/pepeunit}"
SIM_BIN="${PEPEUNIT_UNIT_BIN:-$CARGO_TARGET_DIR/release/pepeunit-unit}"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HTTP_PORT=$(free_port)
MQTT_PORT=$(free_port)
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Both processes hold one socket per unit.
ulimit -n "$(( UNITS * 2 + 1024 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The firmware: two commits on main; units start pinned to the first, the rollout moves them to the second.
git_() { git -C "$WORK/firmware" -c user.name=bench -c user.email=bench@example.com "$@"; }
mkdir -p "$WORK/firmware"
git_ init -q -b main
cat > "$WORK/firmware/env_example.json" <<'JSON'
{"WIFI_SSID": "ssid", "WIFI_PASS": "password"}
JSON
cat > "$WORK/firmware/schema_example.json" <<'JSON'
{"input_base_topic": ["update/pepeunit", "env_update/pepeunit", "schema_update/pepeunit", "log_sync/pepeunit"],
 "output_base_topic": ["state/pepeunit", "log/pepeunit"],
 "input_topic": ["in/pepeunit"], "output_topic": ["out/pepeunit"]}
JSON
echo "print('v1')" > "$WORK/firmware/main.py"
git_ add -A && git_ commit -q -m v1
FIRST=$(git_ rev-parse HEAD)
echo "print('v2')" > "$WORK/firmware/main.py"
git_ commit -qam v2
SECOND=$(git_ rev-parse HEAD)

server_env=(PEPEUNIT_DATA_DIR="$WORK/data" PEPEUNIT_HTTP_BIND="127.0.0.1:$HTTP_PORT"
  PEPEUNIT_MQTT_BIND="127.0.0.1:$MQTT_PORT" PEPEUNIT_PUBLIC_URL="http://127.0.0.1:$HTTP_PORT"
  PEPEUNIT_ALLOW_LOCAL_REMOTES=true PEPEUNIT_LOG_LEVEL=warn)
env "${server_env[@]}" PEPEUNIT_ADMIN_PASSWORD="$PASSWORD" "$SERVER_BIN" admin create --login bench --email bench@example.com >/dev/null
env "${server_env[@]}" "$SERVER_BIN" serve & SERVER_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/health" >/dev/null && break; sleep 0.1; done

gql() { curl -sf "http://127.0.0.1:$HTTP_PORT/graphql" -H 'content-type: application/json' ${TOKEN:+-H "authorization: Bearer $TOKEN"} -d "$1"; }
TOKEN=$(gql "{\"query\":\"mutation { login(login: \\\"bench\\\", password: \\\"$PASSWORD\\\") { accessToken } }\"}" \
  | sed -E 's/.*"accessToken":"([^"]+)".*/\1/')
REPO=$(gql "{\"query\":\"mutation { createRepoUnit(input: { name: \\\"fleet\\\", cloneUrl: \\\"file://$WORK/firmware\\\" }) { uuid } }\"}" \
  | sed -E 's/.*"uuid":"([^"]+)".*/\1/')

echo "machine: $(nproc) cores; $UNITS units, $RATE msg/s each on an output linked to the next unit's input, ${DURATION} s;"
echo "then a rollout of all units from ${FIRST:0:8} to ${SECOND:0:8} in waves of $BATCH"
echo "server RSS before any unit: $(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status") KiB"
"$SIM_BIN" simulate --server "http://127.0.0.1:$HTTP_PORT" --login bench --password "$PASSWORD" \
  --repo-unit "$REPO" --count "$UNITS" --pin "$FIRST" --link --rate "$RATE" --seconds "$DURATION" \
  --state-interval 60 --rollout-to "$SECOND" --rollout-batch "$BATCH" --rollout-wave-timeout "$WAVE_TIMEOUT" \
  --server-pid "$SERVER_PID"
echo "server RSS after the run: $(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status") KiB"
