#!/usr/bin/env bash
# Soak: a collector with Redis under mixed traffic for a bounded time, its memory and
# open files sampled every 10 s, then a reconciliation of everything it acknowledged.
#
#   scripts/soak.sh                    # 10 minutes
#   DURATION=2m RATE=300 SLOW=40 scripts/soak.sh
#
# Traffic (all on loopback, all bounded by DURATION):
#  - tollgate-loadtest, open model at RATE req/s of 20-event batches with 5 % invalid
#    events and 5 % SDK retries, and a second one at RATE/4 with gzip bodies;
#  - one oversized body a second (expects 413) and one bad gzip body a second (400);
#  - SLOW slow-header clients that dribble a header byte every 2 s and reconnect when
#    cut off (the collector's header_read_timeout must cut each of them).
# At the end: the RSS curve (start, peak, end), open fds, the connections cut, and
# `tollgate-loadtest verify` of both runs (lost and duplicated must be 0).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10m}
RATE=${RATE:-400}
SLOW=${SLOW:-50}
cargo build --release -q -p tollgate-collector -p tollgate-loadtest
NEED_WRK=0 . scripts/bench-lib.sh
command -v redis-server >/dev/null || { echo "redis-server is needed: scripts/test-deps.sh" >&2; exit 1; }
seconds=$(python3 -c "import re,sys; m=re.fullmatch(r'(\d+)(s|m|h)?', sys.argv[1]); n=int(m[1]); print(n*{'s':1,'m':60,'h':3600,None:1}[m[2]])" "$DURATION")

redis-server --port 18379 --bind 127.0.0.1 --save "" --appendonly no >/dev/null & pids+=($!)
wait_port 18379
RUST_LOG=warn "${server_cpu[@]}" "$target/tollgate-collector" --listen 127.0.0.1:18480 \
  --admin-listen 127.0.0.1:18490 --data-dir "$data/collector" --redis redis://127.0.0.1:18379 & collector=$!
pids+=($collector)
wait_port 18480

lt() { "${load_cpu[@]}" "$target/tollgate-loadtest" run --target http://127.0.0.1:18480 \
  --duration "$DURATION" --invalid-rate 0.05 --retry-rate 0.05 "$@"; }
lt --rate "$RATE" --seed 11 --manifest "$data/plain.manifest" --out "$data/plain.json" > "$data/plain.txt" & plain=$!
lt --rate "$((RATE / 4 + 1))" --seed 12 --gzip --manifest "$data/gzip.manifest" --out "$data/gzip.json" > "$data/gzip.txt" & gz=$!
pids+=($plain $gz)

# Oversized and bad-gzip bodies, one of each a second.
head -c 2000000 /dev/zero | tr '\0' 'x' > "$data/oversized.json"
(
  end=$((SECONDS + seconds)); big=0; bad=0
  while [ $SECONDS -lt $end ]; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -u dev: -H 'content-type: application/json' \
      --data-binary @"$data/oversized.json" http://127.0.0.1:18480/v1/events)" = 413 ] && big=$((big + 1))
    [ "$(curl -s -o /dev/null -w '%{http_code}' -u dev: -H 'content-type: application/json' -H 'content-encoding: gzip' \
      --data-binary 'not gzip at all' http://127.0.0.1:18480/v1/events)" = 400 ] && bad=$((bad + 1))
    sleep 1
  done
  echo "oversized bodies answered 413: $big; bad gzip answered 400: $bad"
) > "$data/hostile.txt" & pids+=($!)

# Slow-header clients.
python3 - "$SLOW" "$seconds" > "$data/slow.txt" <<'PY' & pids+=($!)
import socket, sys, time
count, seconds = int(sys.argv[1]), int(sys.argv[2])
end = time.time() + seconds
def connect():
    s = socket.create_connection(("127.0.0.1", 18480))
    s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: soak\r\n")
    return s
conns, cut = [connect() for _ in range(count)], 0
while time.time() < end:
    time.sleep(2)
    for i, s in enumerate(conns):
        try:
            s.sendall(b"X")
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    raise ConnectionError
            except BlockingIOError:
                pass
            s.setblocking(True)
        except (ConnectionError, OSError):
            cut += 1
            s.close()
            conns[i] = connect()
print(f"slow-header connections cut by the collector: {cut} ({count} held open at a time)")
PY

echo "== sampling the collector every 10 s for $DURATION (RSS MiB, open fds)"
samples=()
sample() {
  rss=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$collector/status")
  fds=$(ls "/proc/$collector/fd" | wc -l)
  samples+=("$rss")
  printf '%6ss  rss %8s MiB  fds %5s\n' "$SECONDS" "$rss" "$fds"
}
sample
while kill -0 "$plain" 2>/dev/null || kill -0 "$gz" 2>/dev/null; do
  sleep 10
  sample
done
wait "$plain" "$gz" || true
sleep 3
sample
printf '%s\n' "${samples[@]}" | python3 -c "
import sys
rss = [float(l) for l in sys.stdin if l.strip()]
print(f'RSS MiB: start {rss[0]:.1f}, peak {max(rss):.1f}, end {rss[-1]:.1f}')"
cat "$data/hostile.txt" "$data/slow.txt"
curl -s http://127.0.0.1:18490/metrics | grep -E '^tollgate_connections_cut_total|^tollgate_request_errors_total' || true
echo "== plain run";  sed -n 1,6p "$data/plain.txt"
echo "== gzip run";   sed -n 1,6p "$data/gzip.txt"
kill "$collector"; wait "$collector" 2>/dev/null || true
echo "== reconciliation (lost and duplicated must be 0)"
"$target/tollgate-loadtest" verify --manifest "$data/plain.manifest" --log "$data/collector"
"$target/tollgate-loadtest" verify --manifest "$data/gzip.manifest" --log "$data/collector"
