#!/usr/bin/env bash
# HTTP throughput of tollgate-collector on its embedded defaults (memory idempotency,
# local fsynced log) against a parse-only hyper baseline, same load, same run; then,
# where redis-server is installed, the collector deduplicating in Redis; then, where the
# Kafka test broker (tansu) is installed, the collector appending to Kafka.
#
#   scripts/bench-http.sh            # 20 s per target, 64 connections, 20-event batches
#   DURATION=60s CONNECTIONS=128 BATCH=20 REDIS=0 KAFKA=0 scripts/bench-http.sh
#
# Loopback only. Where `taskset` exists the servers run on CPU 0 and wrk (and Redis and
# the Kafka broker, standing in for ones on other machines) on CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tollgate-collector -p tollgate-benches -p tollgate-loadtest --bins
. scripts/bench-lib.sh

load() { # name url
  echo "== $1"
  RUN_ID="run$$-$RANDOM" "${load_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency \
    -s scripts/wrk/batch20.lua "$2" | tail -1
}

"${server_cpu[@]}" "$target/parse-only-baseline" 127.0.0.1:18090 2>/dev/null & pids+=($!)
wait_port 18090
load "parse-only baseline" http://127.0.0.1:18090/v1/events | tee "$data/baseline.txt"

# The load generators themselves, on the same baseline: how fast can each push?
echo "== tollgate-loadtest on the parse-only baseline"
"${load_cpu[@]}" "$target/tollgate-loadtest" run --target http://127.0.0.1:18090 \
  --connections "$CONNECTIONS" --duration "$DURATION" --batch "$BATCH" --out "$data/lt.json" | sed -n 2,4p
lt_rps=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['requests_per_second'])" "$data/lt.json")
wrk_rps=$(tail -1 "$data/baseline.txt" | awk '{print $2}')
echo "== tollgate-loadtest requests/s ÷ wrk requests/s on the baseline: $(awk -v a="$lt_rps" -v b="$wrk_rps" 'BEGIN{printf "%.2f", a/b}')"
oha_bin=${OHA:-$(command -v oha || true)}
if [ -n "$oha_bin" ]; then
  echo "== oha on the parse-only baseline (one fixed body)"
  # oha sends one fixed body: the same shape and size as the others' batches.
  python3 - "$BATCH" > "$data/oha-body.json" <<'PY'
import json, sys
n = int(sys.argv[1])
event = lambda i: {"event_id": f"oha-00000001-{i:04}", "event_name": "item_view", "schema_version": 1,
    "user_id": "user-1", "device_id": "5a1e0c8e-2d5b-4a7e-9f0b-6d8f1c2b3a4d", "session_id": "s-8f7d6c5b",
    "timestamp_event": "2026-11-29T10:00:00.250Z", "surface": "home_feed", "app_version": "5.12.0",
    "platform": "ios", "experiment_ids": ["ranker_v7"], "consent": {"analytics": True},
    "context": {"locale": "en-GB"}, "properties": {"item_id": f"item-{i}", "position": i}}
print(json.dumps({"sent_at": "2026-11-29T10:00:01.000Z", "events": [event(i) for i in range(n)]}))
PY
  "${load_cpu[@]}" "$oha_bin" -z "$DURATION" -c "$CONNECTIONS" --no-tui -m POST \
    -H 'content-type: application/json' -a dev: -D "$data/oha-body.json" \
    --output-format json http://127.0.0.1:18090/v1/events > "$data/oha.json"
  python3 -c "import json,sys; print('requests/s: %.0f' % json.load(open(sys.argv[1]))['summary']['requestsPerSec'])" "$data/oha.json"
fi

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

if [ "${KAFKA:-1}" = 1 ] && [ -n "$tansu" ]; then
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
  start_kafka_broker
  RUST_LOG=warn "${server_cpu[@]}" "$target/tollgate-collector" --listen 127.0.0.1:18082 \
    --admin-listen 127.0.0.1:19093 --data-dir "$data/collector-kafka" \
    --kafka 127.0.0.1:19092 & pids+=($!)
  wait_port 18082
  for _ in $(seq 100); do
    curl -sf http://127.0.0.1:19093/readyz >/dev/null && break; sleep 0.1
  done
  load "tollgate-collector, Kafka sink" http://127.0.0.1:18082/v1/events | tee "$data/kafka.txt"
  kaf=$(tail -1 "$data/kafka.txt" | awk '{print $4}')
  echo "== Kafka sink events/s ÷ local log events/s: $(awk -v a="$kaf" -v b="$coll" 'BEGIN{printf "%.2f", a/b}')"
  # Produce latency: the request's records handed to the producer → all acknowledged.
  curl -s http://127.0.0.1:19093/metrics | python3 -c '
import sys
buckets = []
for line in sys.stdin:
    if line.startswith("tollgate_log_append_duration_seconds_bucket"):
        le = line.split("le=\"")[1].split("\"")[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
total = buckets[-1][1] if buckets else 0
out = []
for q in (0.5, 0.9, 0.99):
    bound = next((b for b, n in buckets if n >= q * total), float("nan"))
    out.append("p%g <= %gms" % (q * 100, bound * 1000))
print("== Kafka produce latency per request (histogram bucket bounds): " + ", ".join(out))
'
fi
