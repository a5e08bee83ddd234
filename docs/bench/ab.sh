#!/usr/bin/env bash
# A/B of two calltrail server binaries, alternated, on PostgreSQL and SQLite
# (synchronous=FULL), each run on a fresh database under the same load
# generator: `calltrail simulate`, C=16, realistic lifecycles. Prints one
# RESULT line per run with the server's CPU in clock ticks.
# With VARY=load, the two binaries are load generators instead: each sends
# to the same server (target/release/calltrail), and each RESULT line also
# gives the load generator's CPU (user + system seconds).
#
# Usage: docs/bench/ab.sh BEFORE_BINARY AFTER_BINARY   (from the repository root)
#   PAIRS=3  CALLS=3000  PG=postgres://postgres@127.0.0.1:5432  VARY=server|load
# Build the "before" binary from its own worktree, e.g.
#   git worktree add /tmp/before <commit>
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target cargo build --release -p calltrail)
#   docs/bench/ab.sh /tmp/before-target/release/calltrail target/release/calltrail
set -euo pipefail
cd "$(dirname "$0")/../.."
BEFORE="$1" AFTER="$2"
PAIRS="${PAIRS:-3}" CALLS="${CALLS:-3000}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
PORT="${PORT:-18999}"
VARY="${VARY:-server}"
cargo build --release -q -p calltrail
export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres

run() { # binary label database-url
  local server="$1" load=target/release/calltrail
  if [ "$VARY" = load ]; then server=target/release/calltrail load="$1"; fi
  env DATABASE_URL="$3" CALLTRAIL_LISTEN="127.0.0.1:$PORT" RUST_LOG=warn "$server" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
  local c0 c1 result cpu times
  times="$(mktemp)"
  c0="$(awk '{print $14+$15}' "/proc/$pid/stat")"
  result="$(/usr/bin/time -f '%U %S' -o "$times" "$load" simulate --url "http://127.0.0.1:$PORT" --calls "$CALLS" --concurrency 16 --seed 1 | grep '^RESULT')"
  c1="$(awk '{print $14+$15}' "/proc/$pid/stat")"
  cpu="$(awk '{printf "%.2f", $1 + $2}' "$times")"; rm -f "$times"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$2 $result server_ticks=$((c1 - c0)) load_cpu_s=$cpu"
}

for pair in $(seq 1 "$PAIRS"); do
  for side in before after; do
    bin="$BEFORE"; [ "$side" = after ] && bin="$AFTER"
    db="ab_${side}_${pair}_$$"
    psql -X -q -d postgres -c "CREATE DATABASE $db"
    run "$bin" "pair=$pair postgres $side" "$PG/$db"
    psql -X -q -d postgres -c "DROP DATABASE $db WITH (FORCE)"
    dir="$(mktemp -d)"
    run "$bin" "pair=$pair sqlite $side" "sqlite://$dir/ab.db?mode=rwc"
    rm -rf "$dir"
  done
done
