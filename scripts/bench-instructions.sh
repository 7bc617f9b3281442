#!/usr/bin/env bash
# Instructions per ingest request: the collector (embedded defaults, shipped privacy
# policy) under callgrind on one CPU, sent the same REQUESTS native batches of BATCH
# events over one keep-alive connection. Instruction counts repeat to ~0.05 % run to run
# where wall-clock throughput on a shared VM moves by tens of per cent, so a small step
# can be compared between two builds:
#
#   scripts/bench-instructions.sh                     # builds and measures this tree
#   COLLECTOR=/tmp/before/tollgate-collector scripts/bench-instructions.sh
#   REQUESTS=300 BATCH=20 scripts/bench-instructions.sh
#   BASELINE=1 scripts/bench-instructions.sh          # also the parse-only baseline,
#                                                     # and collector ÷ baseline
#   REDIS=1 scripts/bench-instructions.sh             # idempotency in a redis-server of
#                                                     # its own (port 16379, CPU 1)
#   KAFKA=1 scripts/bench-instructions.sh             # the log on the Kafka test broker
#                                                     # (tansu, port 19092, CPU 1); the
#                                                     # count includes librdkafka's threads
#
# Counts are instructions, not time: a change that saves cache misses (fewer allocations,
# less memory in flight) can show no gain here and still be faster, and SHA-256 runs
# without the CPU's SHA extensions under valgrind, which overstates the HMAC pseudonyms.
# Only user-space instructions are counted: the kernel's share (TCP, the log's writes
# and fsyncs) is not, so the baseline ratio here is not the events/s ratio of
# scripts/bench-http.sh.
# Loopback only; the ports are fixed (18080, admin 19090, Redis 16379).
set -euo pipefail
cd "$(dirname "$0")/.."
NEED_WRK=0
REQUESTS=${REQUESTS:-300}
BASELINE=${BASELINE:-0}
REDIS=${REDIS:-0}
KAFKA=${KAFKA:-0}
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
if [ -z "${COLLECTOR:-}" ]; then
  cargo build --release -q -p tollgate-collector
  COLLECTOR=${CARGO_TARGET_DIR:-target}/release/tollgate-collector
fi
if [ "$BASELINE" = 1 ]; then
  cargo build --release -q -p tollgate-benches --bin parse-only-baseline
fi
. scripts/bench-lib.sh

# Sends the requests to 127.0.0.1:18080; with `count`, checks that the collector
# accepted every event (an id shorter than eight characters, say, would send the events
# to the quarantine and measure that path instead).
send() {
  python3 - "$REQUESTS" "$BATCH" "$1" <<'PY'
import http.client, json, sys
requests, batch, check = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "count"
# The shape of scripts/wrk/batch20.lua's events; ids fixed, so every run is the same.
event = ('{"event_id":"ins-%06d-%04d","event_name":"item_view","schema_version":1,'
  '"user_id":"user-%d","device_id":"5a1e0c8e-2d5b-4a7e-9f0b-6d8f1c2b3a4d",'
  '"session_id":"s-8f7d6c5b","timestamp_event":"2026-11-29T10:00:00.250Z",'
  '"surface":"home_feed","app_version":"5.12.0","platform":"ios",'
  '"experiment_ids":["ranker_v7","feed_density_b"],"consent":{"analytics":true,"ads":false},'
  '"context":{"locale":"en-GB","country":"GB","ip":"203.0.113.7",'
  '"user_agent":"Tollgate/5.12.0 (iPhone; iOS 19.1)"},'
  '"properties":{"item_id":"item-%d","position":%d,"dwell_ms":1234}}')
conn = http.client.HTTPConnection("127.0.0.1", 18080)
accepted = 0
for r in range(requests):
    events = ",".join(event % (r, i, (r * 7 + i) % 100000, i, i) for i in range(1, batch + 1))
    body = '{"sent_at":"2026-11-29T10:00:01.000Z","events":[' + events + ']}'
    conn.request("POST", "/v1/events", body,
                 {"Content-Type": "application/json", "Authorization": "Basic ZGV2Og=="})
    answer = conn.getresponse()
    text = answer.read()
    if answer.status == 200 and check:
        accepted += json.loads(text)["accepted"]
if check:
    print(f"== {requests} requests of {batch} events, {accepted} accepted")
    if accepted != requests * batch:
        sys.exit("not every event was accepted: the count would measure another path")
PY
}

# Runs `$@` under callgrind on CPU 0 until the requests are sent, then prints the
# instructions per request of its serving threads. Thread 1 is the main thread
# (start-up and shutdown); the others serve the requests (the runtime worker, the log
# writer, ...).
measure() {
  local name=$1 check=$2 out="$data/$1"; shift 2
  mkdir -p "$out"
  # One CPU: one runtime worker, so the work is not split by timing between threads.
  RUST_LOG=warn taskset -c 0 valgrind --tool=callgrind --separate-threads=yes \
    --callgrind-out-file="$out/callgrind.out" "$@" 2> "$out/valgrind.log" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/18080) 2>/dev/null && break; sleep 0.2; done
  if [ "$check" = count ]; then
    for _ in $(seq 600); do curl -sf http://127.0.0.1:19090/readyz >/dev/null && break; sleep 0.2; done
  fi
  send "$check"
  # TERM, not INT: a background job of a script ignores SIGINT unless it handles it
  # (the baseline does not); callgrind writes its counts either way.
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  local total=0 n f
  for f in "$out"/callgrind.out-*; do
    [ "${f##*-}" = 01 ] && continue
    n=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n {gsub(",", "", $1); n = $1} END {print n + 0}')
    total=$((total + n))
  done
  echo "== $name: instructions in the serving threads: $total"
  echo "== $name: per request: $((total / REQUESTS))"
  eval "per_request_$name=$((total / REQUESTS))"
}

if [ "$REDIS" = 1 ]; then
  command -v redis-server >/dev/null || { echo "REDIS=1 needs redis-server" >&2; exit 1; }
  # Empty at every run (nothing saved), so the fixed ids are never duplicates.
  "${load_cpu[@]}" redis-server --bind 127.0.0.1 --port 16379 --save "" --appendonly no \
    --dir "$data" --logfile "$data/redis.log" &
  pids+=($!)
  wait_port 16379
  # valgrind slows the collector, not Redis; the claims' timeout still has to allow
  # for the collector's own share of a round trip.
  export TOLLGATE_IDEMPOTENCY__BACKEND=redis \
    TOLLGATE_IDEMPOTENCY__REDIS__URL=redis://127.0.0.1:16379 \
    TOLLGATE_IDEMPOTENCY__REDIS__COMMAND_TIMEOUT=5s
fi
sink=()
if [ "$KAFKA" = 1 ]; then
  [ -n "$tansu" ] || { echo "KAFKA=1 needs the test broker: scripts/test-deps.sh installs it" >&2; exit 1; }
  start_kafka_broker
  sink=(--kafka 127.0.0.1:19092)
fi
measure collector count "$COLLECTOR" \
  --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:19090 --data-dir "$data/collector/data" \
  "${sink[@]}"
if [ "$BASELINE" = 1 ]; then
  measure baseline none "$target/parse-only-baseline" 127.0.0.1:18080
  awk -v c="$per_request_collector" -v b="$per_request_baseline" \
    'BEGIN { printf "== baseline ÷ collector (instructions per request): %.3f\n", b / c }'
fi
