#!/usr/bin/env bash
# Live-subscription benchmark, one run (tests/examples/subscribers.rs): a
# release server on SQLite with 1,000 callEvents subscribers (100 WebSockets
# × 10, graphql-transport-ws) while deliveries arrive at 500/s for 20 s:
# 200 → subscriber latency, missed events, server RSS; then the maximum
# ingestion rate (16 calls in flight, 10 s); all against a fresh server
# without subscribers. The example starts and stops its own servers.
#
# Usage: docs/bench/subscribers.sh [--subscribers 1000] [--connections 100]
#        [--rate 500] [--seconds 20] [--concurrency 16] [--max-seconds 10]
# Prints RESULT lines and a markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
# One descriptor per WebSocket (and per pooled HTTP connection) on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -q -p calltrail
cargo build --release -q -p calltrail-tests --example subscribers
echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
exec target/release/examples/subscribers --server target/release/calltrail "$@"
