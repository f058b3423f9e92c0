#!/usr/bin/env bash
# A loopback cluster for the benchmarks: `shoal scheduler`, two workers of
# one thread each (shoal-bench itself, started with SHOAL_WORKER), and
# shoal-bench as the client.
#   bench/cluster.sh overhead [--quick] [--rounds N]
# Builds the release binaries first; stops everything it started at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p shoal-bench -p shoal --bins
log=$(mktemp)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -f "$log"' EXIT
target/release/shoal scheduler --host 127.0.0.1 --port 0 2>"$log" &
pids+=($!)
address=""
for _ in $(seq 100); do
    address=$(grep -o 'listening on [0-9.]*:[0-9]*' "$log" | head -1 | cut -d' ' -f3 || true)
    [ -n "$address" ] && break
    sleep 0.1
done
[ -n "$address" ] || { echo "the scheduler did not start:"; cat "$log"; exit 1; }
for _ in 1 2; do
    SHOAL_WORKER="tcp://$address" SHOAL_WORKER_THREADS=1 target/release/shoal-bench 2>/dev/null &
    pids+=($!)
done
benchmark=$1
shift
target/release/shoal-bench "$benchmark" --scheduler "tcp://$address" "$@"
