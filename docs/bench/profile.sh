#!/usr/bin/env bash
# Instruction profile of ingestion: the server under callgrind (collection
# switched on once it is ready, so start-up and migrations are not counted),
# a fixed load from `calltrail simulate`, then instructions per delivery by
# area (docs/bench/callgrind-areas.py). Instruction counts do not depend on
# what else runs on the machine; wall-clock figures do.
#
# Usage: docs/bench/profile.sh            (from the repository root; needs valgrind)
#   CALLS=300   call lifecycles (about 7 deliveries each), SEED=1, C=16
#   DATABASE_URL=postgres://…/fresh_db    profile PostgreSQL instead of a fresh SQLite file
#   OUT=/tmp/calltrail-profile            where the callgrind file and logs go
set -euo pipefail
cd "$(dirname "$0")/../.."
CALLS="${CALLS:-300}"; SEED="${SEED:-1}"; C="${C:-16}"; PORT="${PORT:-18961}"
OUT="${OUT:-/tmp/calltrail-profile}"
mkdir -p "$OUT"; rm -f "$OUT"/callgrind.out "$OUT"/calltrail.db*
# A release build with line tables, in its own target directory.
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_TARGET_DIR=target/profile \
  cargo build --release -q -p calltrail
BIN=target/profile/release/calltrail
URL="${DATABASE_URL:-sqlite://$OUT/calltrail.db?mode=rwc}"
DATABASE_URL="$URL" CALLTRAIL_LISTEN="127.0.0.1:$PORT" RUST_LOG=warn \
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
  "$BIN" >"$OUT/server.log" 2>&1 &
VPID=$!
trap 'kill "$VPID" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done
callgrind_control -i on "$VPID" >/dev/null
result="$("$BIN" simulate --url "http://127.0.0.1:$PORT" --calls "$CALLS" --concurrency "$C" --seed "$SEED" 2>/dev/null | grep '^RESULT')"
callgrind_control -i off "$VPID" >/dev/null
kill -INT "$VPID"; wait "$VPID" || true
echo "$result"
sent="$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' <<<"$result")"
python3 docs/bench/callgrind-areas.py "$OUT/callgrind.out" "$sent"
echo "tree: callgrind_annotate --inclusive=yes $OUT/callgrind.out | less"
