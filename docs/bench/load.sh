#!/usr/bin/env bash
# Load benchmark, one run, against one calltrail server (PostgreSQL by default):
#   1. fresh deliveries at C=16 (realistic lifecycles; the reference rate),
#   2. the same deliveries again: duplicate-only traffic,
#   3. a C=128 burst of about 50,000 deliveries: errors, 503s, p99, peak RSS,
#   4. `calls(first: 100)` with attempts, analysis and actions: p50/p99 idle,
#      then while deliveries arrive at half the rate of step 1.
# Usage: docs/bench/load.sh            (from the repository root)
#   DB=postgres (or sqlite)   PG=postgres://postgres@127.0.0.1:5432
#   CALLS=3000 (step 1)  BURST_CALLS=6600 (step 3)  READ_SECONDS=15
# Needs: PostgreSQL for DB=postgres, and wrk (apt-get install wrk) for step 4.
set -euo pipefail
cd "$(dirname "$0")/../.."
DB="${DB:-postgres}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
CALLS="${CALLS:-3000}"
BURST_CALLS="${BURST_CALLS:-6600}"
READ_SECONDS="${READ_SECONDS:-15}"
PORT="${PORT:-18919}"
WORK="$(mktemp -d)"
SERVER_PID=""
DBNAME="bench_load_$$"
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
env ${SERVER_ENV:-} DATABASE_URL="$DATABASE_URL" CALLTRAIL_LISTEN="127.0.0.1:$PORT" RUST_LOG=warn "$BIN" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "$URL/readyz" >/dev/null || { cat "$WORK/server.log" >&2; exit 1; }

echo "== machine: $(nproc) cores, $(uname -sr); database: $DB; date: $(date -u +%Y-%m-%dT%H:%MZ)"
simulate() { "$BIN" simulate --url "$URL" "$@" 2>/dev/null | grep '^RESULT' || true; }
field() { sed -n "s/.*$2=\([0-9.]*\).*/\1/p" <<<"$1"; }
rss() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$SERVER_PID/status"; }

echo "== 1. fresh deliveries, C=16, $CALLS calls"
fresh="$(simulate --calls "$CALLS" --concurrency 16 --seed 11)"; echo "$fresh"
echo "== 2. the same deliveries again (duplicates only), C=16"
dups="$(simulate --calls "$CALLS" --concurrency 16 --seed 11)"; echo "$dups"
echo "== 3. burst, C=128, $BURST_CALLS calls"
burst="$(simulate --calls "$BURST_CALLS" --concurrency 128 --seed 12)"; burst_rss="$(rss)"; echo "$burst peak_rss_mb=$burst_rss"
refused503="$(curl -s "$URL/metrics" | awk '/^calltrail_deliveries_total\{.*reason="unavailable"/ {s += $NF} END {print s + 0}')"
echo "503 answers (reason=unavailable) so far: $refused503"

cat >"$WORK/page.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"query":"{ calls(first: 100) { totalCount nodes { id status durationSeconds metadata attempts { number status } analysis { success summary } actions { kind status } } } }"}'
LUA
read_p() { wrk -t2 -c8 -d"${READ_SECONDS}s" --latency -s "$WORK/page.lua" "$URL/graphql" | awk '
  /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Requests\/sec/ {rps=$2}
  END {printf "page_p50=%s page_p99=%s page_rps=%s\n", p50, p99, rps}'; }
echo "== 4. calls(first: 100) with nested fields, idle (8 connections)"
idle="$(read_p)"; echo "$idle"
half="$(awk -v r="$(field "$fresh" deliveries_per_s)" 'BEGIN {printf "%.0f", r / 2}')"
echo "== 4. the same while ingesting at $half deliveries/s (half of step 1)"
"$BIN" simulate --url "$URL" --calls 100000 --concurrency 16 --seed 13 --rate "$half" >"$WORK/background.out" 2>&1 &
BG=$!
sleep 2
busy="$(read_p)"; echo "$busy"
kill "$BG" 2>/dev/null; wait "$BG" 2>/dev/null || true

echo
echo "| measure | figure |"
echo "|---|---|"
echo "| fresh deliveries/s (C=16) | $(field "$fresh" deliveries_per_s) (p99 $(field "$fresh" p99_ms) ms) |"
echo "| duplicate-only deliveries/s (C=16) | $(field "$dups" deliveries_per_s) ($(awk -v a="$(field "$dups" deliveries_per_s)" -v b="$(field "$fresh" deliveries_per_s)" 'BEGIN {printf "%.2f", a / b}')× fresh) |"
echo "| burst C=128: deliveries, errors, 503s | $(field "$burst" sent), $(field "$burst" errors), $refused503 |"
echo "| burst C=128: deliveries/s, p99 ms | $(field "$burst" deliveries_per_s), $(field "$burst" p99_ms) |"
echo "| peak RSS up to the end of the burst | $burst_rss MB |"
echo "| peak RSS over the whole run (reads included) | $(rss) MB |"
echo "| calls(first:100) idle p50 / p99 | $(sed -n 's/.*page_p50=\([^ ]*\).*/\1/p' <<<"$idle") / $(sed -n 's/.*page_p99=\([^ ]*\).*/\1/p' <<<"$idle") |"
echo "| calls(first:100) while ingesting at $half/s p50 / p99 | $(sed -n 's/.*page_p50=\([^ ]*\).*/\1/p' <<<"$busy") / $(sed -n 's/.*page_p99=\([^ ]*\).*/\1/p' <<<"$busy") |"
