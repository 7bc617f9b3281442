#!/usr/bin/env bash
# HTTP throughput of tollgate-collector on its embedded defaults (memory idempotency,
# local fsynced log) against a parse-only hyper baseline, same load, same run; then,
# where redis-server is installed, the collector deduplicating in Redis.
#
#   scripts/bench-http.sh            # 20 s per target, 64 connections, 20-event batches
#   DURATION=60s CONNECTIONS=128 BATCH=20 REDIS=0 scripts/bench-http.sh
#
# Loopback only. Where `taskset` exists the servers run on CPU 0 and wrk (and Redis,
# standing in for a Redis on another machine) on CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-64}
export BATCH=${BATCH:-20}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

cargo build --release -q -p tollgate-collector -p tollgate-benches --bins
target=${CARGO_TARGET_DIR:-target}/release
server_cpu=() ; load_cpu=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  server_cpu=(taskset -c 0) ; load_cpu=(taskset -c 1)
fi

data=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$data"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

load() { # name url
  echo "== $1"
  RUN_ID="run$$-$RANDOM" "${load_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency \
    -s scripts/wrk/batch20.lua "$2" | tail -1
}

"${server_cpu[@]}" "$target/parse-only-baseline" 127.0.0.1:18090 2>/dev/null & pids+=($!)
wait_port 18090
load "parse-only baseline" http://127.0.0.1:18090/v1/events | tee "$data/baseline.txt"

RUST_LOG=warn "${server_cpu[@]}" "$target/tollgate-collector" --listen 127.0.0.1:18080 \
  --admin-listen 127.0.0.1:19090 --data-dir "$data/collector" & pids+=($!)
wait_port 18080
load "tollgate-collector (embedded defaults)" http://127.0.0.1:18080/v1/events | tee "$data/collector.txt"

if [ "${REDIS:-1}" = 1 ] && command -v redis-server >/dev/null; then
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
  "${load_cpu[@]}" redis-server --bind 127.0.0.1 --port 16379 --save "" --appendonly no \
    --dir "$data" >/dev/null & pids+=($!)
  wait_port 16379
  RUST_LOG=warn "${server_cpu[@]}" "$target/tollgate-collector" --listen 127.0.0.1:18081 \
    --admin-listen 127.0.0.1:19091 --data-dir "$data/collector-redis" \
    --redis redis://127.0.0.1:16379 & pids+=($!)
  wait_port 18081
  load "tollgate-collector, Redis idempotency" http://127.0.0.1:18081/v1/events | tee "$data/redis.txt"
fi

base=$(tail -1 "$data/baseline.txt" | awk '{print $4}')
coll=$(tail -1 "$data/collector.txt" | awk '{print $4}')
lines=$(cat "$data"/collector/events/*.ndjson | wc -l)
rejected=$(cat "$data"/collector/quarantine/*.ndjson 2>/dev/null | wc -l || true)
echo "== collector events/s ÷ baseline events/s: $(awk -v a="$coll" -v b="$base" 'BEGIN{printf "%.2f", a/b}')"
echo "== events logged by the collector: $lines (quarantined: $rejected)"
if [ -f "$data/redis.txt" ]; then
  red=$(tail -1 "$data/redis.txt" | awk '{print $4}')
  echo "== Redis idempotency events/s ÷ memory idempotency events/s: $(awk -v a="$red" -v b="$coll" 'BEGIN{printf "%.2f", a/b}')"
  echo "== events logged with Redis: $(cat "$data"/collector-redis/events/*.ndjson | wc -l)"
fi
