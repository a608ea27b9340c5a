#!/usr/bin/env bash
# HTTP load benchmark of the Pepeunit server: an authenticated GraphQL query and /health, on SQLite and on
# PostgreSQL, with wrk (Debian package `wrk`). Prints requests/s and latency percentiles.
#
#   bench/http-load.sh                  # both engines, 20 s per run, 64 connections
#   DURATION=30s CONNECTIONS=128 bench/http-load.sh
#   ENGINES=sqlite bench/http-load.sh
#
# PostgreSQL: PEPEUNIT_BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test); a fresh
# database is created for the run and dropped after it.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-20s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
ENGINES="${ENGINES:-sqlite postgres}"
PG_ADMIN_URL="${PEPEUNIT_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pepeunit-target}"

command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release -p pepeunit-backend --quiet
BIN="$CARGO_TARGET_DIR/release/pepeunit"
PORT=18089
WORK="$(mktemp -d)"
SERVER_PID=""
PG_DB=""

cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  [ -n "$PG_DB" ] && psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/graphql.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"query":"{ me { uuid login role status } }"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, '"login":"bench"', 1, true) then
    error("unexpected response " .. status .. ": " .. body)
  end
end
LUA

run_engine() {
  local engine=$1 data="$WORK/$1"
  local -a env=(PEPEUNIT_DATA_DIR="$data" PEPEUNIT_HTTP_BIND="127.0.0.1:$PORT" PEPEUNIT_LOG_LEVEL=warn)
  if [ "$engine" = postgres ]; then
    PG_DB="pepeunit_bench_$RANDOM$RANDOM"
    psql "$PG_ADMIN_URL" -qc "CREATE DATABASE \"$PG_DB\""
    env+=(PEPEUNIT_DATABASE_URL="${PG_ADMIN_URL%/*}/$PG_DB")
  fi
  env "${env[@]}" PEPEUNIT_ADMIN_PASSWORD=bench-password-1 "$BIN" admin create --login bench --email bench@example.com >/dev/null
  env "${env[@]}" "$BIN" serve & SERVER_PID=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
  TOKEN=$(curl -sf "http://127.0.0.1:$PORT/graphql" -H 'content-type: application/json' \
    -d '{"query":"mutation { login(login: \"bench\", password: \"bench-password-1\") { accessToken } }"}' \
    | sed -E 's/.*"accessToken":"([^"]+)".*/\1/')
  export TOKEN
  echo "### $engine: authenticated GraphQL query { me { ... } }"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$WORK/graphql.lua" "http://127.0.0.1:$PORT/graphql"
  echo "### $engine: GET /health"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$PORT/health"
  echo "### $engine: server RSS after load: $(ps -o rss= -p "$SERVER_PID") KiB"
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  if [ -n "$PG_DB" ]; then psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)"; PG_DB=""; fi
}

echo "machine: $(nproc) cores; wrk -t$THREADS -c$CONNECTIONS -d$DURATION on the same machine"
for engine in $ENGINES; do run_engine "$engine"; done
