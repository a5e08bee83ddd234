#!/usr/bin/env bash
# Ingestion benchmark, one run: the database's own ceiling for one delivery's
# writes (../shared/limit: pgbench "1rt" on PostgreSQL, sqlite-limit with
# synchronous=FULL), then calltrail on PostgreSQL and on SQLite (FULL) under
# `calltrail simulate` (realistic lifecycles: many calls in parallel, each
# call's deliveries in order), and the ratios.
#
# Usage: docs/bench/ingest.sh            (from the repository root)
#   CALLS=4000        call lifecycles per calltrail run (about 8 deliveries each)
#   C=16              concurrency (simulate workers; pgbench clients)
#   LIMIT_SECONDS=20  duration of each ceiling measurement
#   LIMIT_DIR=../shared/limit
#   PG=postgres://postgres@127.0.0.1:5432   server where databases may be created
#   SERVER_ENV="CALLTRAIL_INGEST_BATCH=1"    extra settings for the calltrail runs
#   ONLY=sqlite | ONLY=postgres                 measure one database (and its ceiling) only
#   ROUNDS=1          repeat ceiling + calltrail this many times, interleaved; the
#                     summary gives each round's ratio and their median (the
#                     machine's speed drifts within minutes: a ceiling and the
#                     calltrail run compared with it should be measured together)
# Prints one RESULT line per measurement and a summary table.
set -euo pipefail
cd "$(dirname "$0")/../.."
CALLS="${CALLS:-4000}"
C="${C:-16}"
LIMIT_SECONDS="${LIMIT_SECONDS:-20}"
LIMIT_DIR="$(cd "${LIMIT_DIR:-../shared/limit}" && pwd)"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
PORT="${PORT:-18917}"
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres
cargo build --release -q -p calltrail
BIN=target/release/calltrail
( cd "$LIMIT_DIR/sqlite-limit" && CARGO_TARGET_DIR="$WORK/limit-target" cargo build --release -q )

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "== date: $(date -u +%Y-%m-%dT%H:%MZ)"

ONLY="${ONLY:-}"
ROUNDS="${ROUNDS:-1}"

# Run calltrail on DATABASE_URL=$1 (PostgreSQL database name $2) and load it; prints
# simulate's RESULT line plus peak RSS and CPU microseconds per delivery (server, PostgreSQL).
run_calltrail() {
  env ${SERVER_ENV:-} DATABASE_URL="$1" CALLTRAIL_LISTEN="127.0.0.1:$PORT" RUST_LOG=warn "$BIN" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { cat "$WORK/server.log" >&2; echo "bench: the server did not start" >&2; exit 1; }
  local result rss cpu0 cpu1 pgcpu=0 sent
  cpu0="$(awk '{print $14+$15}' "/proc/$SERVER_PID/stat")"
  # The load generator shares the two cores; its own CPU is printed too.
  result="$(/usr/bin/time -f 'CLIENT_CPU %U %S' -o "$WORK/client.time" "$BIN" simulate --url "http://127.0.0.1:$PORT" --calls "$CALLS" --concurrency "$C" --seed 1 | grep '^RESULT')"
  cpu1="$(awk '{print $14+$15}' "/proc/$SERVER_PID/stat")"
  rss="$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$SERVER_PID/status")"
  # CPU of the PostgreSQL backends serving this database (its connections live as long as the server).
  if [ -n "${2:-}" ]; then
    for pid in $(psql -X -tA -d postgres -c "SELECT pid FROM pg_stat_activity WHERE datname = '$2'"); do
      pgcpu=$(( pgcpu + $(awk '{print $14+$15}' "/proc/$pid/stat" 2>/dev/null || echo 0) ))
    done
  fi
  kill "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=""
  sent="$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' <<<"$result")"
  local tick; tick="$(getconf CLK_TCK)"
  local client_us; client_us="$(awk -v n="$sent" '/^CLIENT_CPU/ {printf "%d", ($2 + $3) * 1000000 / n}' "$WORK/client.time")"
  echo "$result peak_rss_mb=$rss server_cpu_us=$(( (cpu1 - cpu0) * 1000000 / tick / sent )) pg_cpu_us=$(( pgcpu * 1000000 / tick / sent )) client_cpu_us=$client_us"
}

field() { sed -n "s/.*$2=\([0-9.]*\).*/\1/p" <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

rows="" pg_ratios="" sqlite_ratios=""
for round in $(seq 1 "$ROUNDS"); do
  if [ "$ONLY" != sqlite ]; then
    echo "== round $round: ceiling: PostgreSQL, one statement and round trip per delivery (1rt), C=$C"
    db="bench_limit_$$"
    psql -X -q -d postgres -c "CREATE DATABASE $db"
    pg_1rt="$(LIMIT_OUT_DIR="$WORK/pg" "$LIMIT_DIR/pgbench.sh" "$db" "$C" "$LIMIT_SECONDS" 1rt | tail -n1)"
    psql -X -q -d postgres -c "DROP DATABASE $db"
    echo "$pg_1rt"
    echo "== round $round: calltrail on PostgreSQL, C=$C, $CALLS calls"
    db="bench_calltrail_$$"
    psql -X -q -d postgres -c "CREATE DATABASE $db"
    ct_pg="$(run_calltrail "$PG/$db" "$db")"
    psql -X -q -d postgres -c "DROP DATABASE $db"
    echo "$ct_pg"
    r="$(ratio "$(field "$ct_pg" deliveries_per_s)" "$(field "$pg_1rt" events_per_s)")"
    pg_ratios="$pg_ratios $r"
    rows="$rows| $round | PostgreSQL ceiling (1rt) | $(field "$pg_1rt" events_per_s) | $(field "$pg_1rt" p50_ms) | $(field "$pg_1rt" p99_ms) | 1.00 | | | |
| $round | calltrail on PostgreSQL | $(field "$ct_pg" deliveries_per_s) | $(field "$ct_pg" p50_ms) | $(field "$ct_pg" p99_ms) | $r | $(field "$ct_pg" server_cpu_us) + $(field "$ct_pg" pg_cpu_us) | $(field "$ct_pg" peak_rss_mb) | $(field "$ct_pg" client_cpu_us) |
"
  fi
  if [ "$ONLY" != postgres ]; then
    echo "== round $round: ceiling: SQLite, synchronous=FULL, one transaction per delivery"
    rm -f "$WORK/limit.db" "$WORK/limit.db-wal" "$WORK/limit.db-shm"
    sqlite_full="$("$WORK/limit-target/release/sqlite-limit" --db "$WORK/limit.db" --seconds "$LIMIT_SECONDS" --synchronous FULL | tail -n1)"
    echo "$sqlite_full"
    echo "== round $round: calltrail on SQLite (synchronous=FULL), C=$C, $CALLS calls"
    rm -f "$WORK/calltrail.db" "$WORK/calltrail.db-wal" "$WORK/calltrail.db-shm"
    ct_sqlite="$(run_calltrail "sqlite://$WORK/calltrail.db?mode=rwc")"
    echo "$ct_sqlite"
    r="$(ratio "$(field "$ct_sqlite" deliveries_per_s)" "$(field "$sqlite_full" events_per_s)")"
    sqlite_ratios="$sqlite_ratios $r"
    rows="$rows| $round | SQLite ceiling (FULL) | $(field "$sqlite_full" events_per_s) | $(field "$sqlite_full" p50_ms) | $(field "$sqlite_full" p99_ms) | 1.00 | | | |
| $round | calltrail on SQLite (FULL) | $(field "$ct_sqlite" deliveries_per_s) | $(field "$ct_sqlite" p50_ms) | $(field "$ct_sqlite" p99_ms) | $r | $(field "$ct_sqlite" server_cpu_us) | $(field "$ct_sqlite" peak_rss_mb) | $(field "$ct_sqlite" client_cpu_us) |
"
  fi
done

echo
echo "| round | run | deliveries/s | p50 ms | p99 ms | ratio to ceiling | CPU µs/delivery (server + PostgreSQL) | peak RSS MB | load generator CPU µs/delivery |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s' "$rows"
echo
echo "median ratio over $ROUNDS round(s): PostgreSQL $(median <<<"$pg_ratios") (rounds:$pg_ratios), SQLite $(median <<<"$sqlite_ratios") (rounds:$sqlite_ratios)"
