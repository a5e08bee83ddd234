#!/usr/bin/env bash
# GraphQL read benchmark: seed CALLS call lifecycles (about 7 deliveries each)
# through the webhook, then measure with wrk, at 1, 2 and 8 connections:
#   page     calls(first: 100) with attempts, analysis and actions
#   filtered calls(first: 100) filtered by status, success and a metadata match
#   stats    callStats with series(bucket: HOUR)
# On PostgreSQL the tables are vacuumed after seeding, as autovacuum would.
# Usage: docs/bench/graphql.sh    (from the repository root; needs wrk)
#   DB=postgres|sqlite (default postgres)  CALLS=100000  SECONDS_EACH=10
set -euo pipefail
cd "$(dirname "$0")/../.."
DB="${DB:-postgres}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
CALLS="${CALLS:-100000}"
SECONDS_EACH="${SECONDS_EACH:-10}"
PORT="${PORT:-18920}"
WORK="$(mktemp -d)"
SERVER_PID=""
DBNAME="bench_graphql_$$"
export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
  [ "$DB" = postgres ] && psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DBNAME" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p calltrail
BIN=target/release/calltrail
URL="http://127.0.0.1:$PORT"
if [ "$DB" = postgres ]; then
  psql -X -q -d postgres -c "CREATE DATABASE $DBNAME"
  DATABASE_URL="$PG/$DBNAME"
else
  DATABASE_URL="sqlite://$WORK/calltrail.db?mode=rwc"
fi
DATABASE_URL="$DATABASE_URL" CALLTRAIL_LISTEN="127.0.0.1:$PORT" RUST_LOG=warn "$BIN" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.1; done

echo "== machine: $(nproc) cores, $(uname -sr); database: $DB; date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "== seeding $CALLS calls through the webhook (C=64)"
"$BIN" simulate --url "$URL" --calls "$CALLS" --concurrency 64 --seed 21 2>/dev/null | grep '^RESULT'
curl -s "$URL/graphql" -H 'content-type: application/json' -d '{"query":"{ callStats { total } events { totalCount } }"}'; echo
# What autovacuum does in production (this machine's PostgreSQL runs with
# autovacuum off): without it the call table carries one dead row version
# per delivery and every scan reads them.
[ "$DB" = postgres ] && psql -X -q -d "$DBNAME" -c "VACUUM ANALYZE"

query() {
  cat >"$WORK/q.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"query":"$1"}'
LUA
  for c in 1 2 8; do
    wrk -t1 -c"$c" -d"${SECONDS_EACH}s" --latency -s "$WORK/q.lua" "$URL/graphql" | awk -v c="$c" -v name="$2" '
      /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Requests\/sec/ {rps=$2} /Non-2xx/ {bad=$NF}
      END {printf "| %s | %d | %s | %s | %s | %s |\n", name, c, p50, p99, rps, (bad == "" ? 0 : bad)}'
  done
}
echo
echo "| query | connections | p50 | p99 | requests/s | non-2xx |"
echo "|---|---|---|---|---|---|"
query '{ calls(first: 100) { totalCount nodes { id status durationSeconds metadata attempts { number status } analysis { success summary } actions { kind status } } } }' page
query '{ calls(first: 100, filter: {status: [COMPLETED], success: true, metadata: [{key: \\\"campaign\\\", equals: \\\"abandoned-cart-nov\\\"}]}) { totalCount nodes { id status metadata attempts { number status } analysis { success } actions { kind } } } }' filtered
query '{ callStats { total byStatus { status count } successRate connectRate attemptsPerCall averageDurationSeconds creditsUsed actionsByKind { kind count } series(bucket: HOUR) { start total } } }' stats
