#!/usr/bin/env bash
# Broker benchmark (backend/benches/broker): Pepeunit on SQLite and PostgreSQL and a private Mosquitto under
# the same load client in one run; with a revision argument, that revision's server is built and measured
# side by side as "before" (each target before, then after, so both meet the same machine load).
#
#   bench/broker.sh                       # this tree only
#   bench/broker.sh 10c61f0               # this tree ("after") against 10c61f0 ("before")
#   PEPEUNIT_BENCH_SECONDS=30 bench/broker.sh 10c61f0
#   PEPEUNIT_BENCH_BASELINE_BIN=/path/to/old/pepeunit bench/broker.sh
#
# Every PEPEUNIT_BENCH_* setting of docs/src/benchmarks.md passes through. The Markdown report goes to
# stdout, progress to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pepeunit-target}"
export PEPEUNIT_SKIP_FRONTEND="${PEPEUNIT_SKIP_FRONTEND:-1}"

if [ -n "${1:-}" ] && [ -z "${PEPEUNIT_BENCH_BASELINE_BIN:-}" ]; then
  rev="$(git rev-parse --short "$1")"
  base_tree="${BASE_WORKTREE:-$HOME/.cache/pepeunit-bench-base-$rev}"
  base_target="${BASE_TARGET_DIR:-$HOME/.cache/pepeunit-base-target}"
  [ -d "$base_tree" ] || git worktree add --detach "$base_tree" "$rev" >&2
  # Its own target dir: the same binary name in one target dir would overwrite this tree's server.
  (cd "$base_tree" && CARGO_TARGET_DIR="$base_target" cargo build --release --locked -p pepeunit-backend >&2)
  cp "$base_target/release/pepeunit" "$base_target/pepeunit-$rev"
  export PEPEUNIT_BENCH_BASELINE_BIN="$base_target/pepeunit-$rev"
fi

exec cargo bench --locked -p pepeunit-backend --bench broker
