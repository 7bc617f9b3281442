#!/usr/bin/env bash
# What the shadow proxy costs the primary path, against nginx's `mirror` module set up
# the same way, in one run:
#   1. the collector alone, closed model: its max request rate R;
#   2. open model at R/2 (latency from the intended send time) against the collector
#      alone, the proxy (mirroring 100 % to a second collector) and nginx `mirror`;
#   3. the same with a shadow that answers every request after 200 ms.
#
#   scripts/bench-shadow.sh                 # 15 s per run
#   DURATION=30s scripts/bench-shadow.sh
#   SHARE=0.25 scripts/bench-shadow.sh      # at a quarter of the max rate instead of half
#
# Needs nginx (apt-get install nginx-light or nginx). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null || { echo "nginx is needed: apt-get install nginx" >&2; exit 1; }
cargo build --release -q -p tollgate-collector -p tollgate-shadow-proxy -p tollgate-loadtest
NEED_WRK=0 . scripts/bench-lib.sh

lt() { # name url args…  → "name rps p50 p99"
  local name=$1 url=$2; shift 2
  "${load_cpu[@]}" "$target/tollgate-loadtest" run --target "$url" --batch 20 \
    --retry-rate 0 --invalid-rate 0 --late-rate 0 --out "$data/$name.json" "$@" >/dev/null
  python3 - "$data/$name.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<28} {r['requests_per_second']:9.0f} req/s  p50 {r['latency']['p50_us']/1000:7.2f} ms  p99 {r['latency']['p99_us']/1000:7.2f} ms")
PY
}

start_collector() { # port data-dir cpu…
  local port=$1 dir=$2; shift 2
  RUST_LOG=warn,tower_http=off "$@" "$target/tollgate-collector" --listen 127.0.0.1:$port \
    --admin-listen 127.0.0.1:$((port + 1000)) --data-dir "$dir" & pids+=($!)
  wait_port "$port"
}

# A shadow that answers after 200 ms (a slow new pipeline).
"${load_cpu[@]}" python3 - 18299 >/dev/null 2>&1 <<'PY' & pids+=($!)
import asyncio, sys
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            await asyncio.sleep(0.2)
            body = b'{"accepted":0,"duplicate":0,"rejected":0,"retry":0,"results":[]}'
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except Exception:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    await server.serve_forever()
asyncio.run(main())
PY
wait_port 18299

# The primary path (primary collector, then the proxy or nginx) on the server core; the
# shadow stands in for another machine and shares the load generator's core.
# Both collectors log to memory (/dev/shm): this measures what the proxy costs, and a
# shared virtual disk's fsync stalls (tens of ms at p99 on this VM) would drown it; the
# shadow would not share the primary's disk anyway. PRIMARY_DISK=1 logs the primary to disk.
memory=$(mktemp -d -p /dev/shm)
trap 'cleanup; rm -rf "$memory"' EXIT
primary_data="$memory/primary"
[ "${PRIMARY_DISK:-0}" = 1 ] && primary_data="$data/primary"
start_collector 18280 "$primary_data" "${server_cpu[@]}"
start_collector 18290 "$memory/shadow" "${load_cpu[@]}"

proxy_pid=0; nginx_pid=0
start_mirrors() { # shadow_port
  [ "$proxy_pid" != 0 ] && kill "$proxy_pid" && wait "$proxy_pid" 2>/dev/null || true
  [ "$nginx_pid" != 0 ] && kill "$nginx_pid" && wait "$nginx_pid" 2>/dev/null || true
  "${server_cpu[@]}" "$target/tollgate-shadow-proxy" --listen 127.0.0.1:18281 --admin-listen 127.0.0.1:18291 \
    --primary http://127.0.0.1:18280 --shadow "http://127.0.0.1:$1" 2>/dev/null & proxy_pid=$!; pids+=($!)
  mkdir -p "$data/nginx"
  cat > "$data/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $data/nginx/nginx.pid;
error_log $data/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $data/nginx/body;
  proxy_temp_path $data/nginx/proxy;
  upstream primary { server 127.0.0.1:18280; keepalive 64; }
  upstream shadow { server 127.0.0.1:$1; keepalive 64; }
  server {
    listen 127.0.0.1:18282;
    client_max_body_size 4m;
    location / {
      mirror /mirror;
      mirror_request_body on;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://primary;
    }
    location = /mirror {
      internal;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Tollgate-Shadow 1;
      proxy_pass http://shadow\$request_uri;
    }
  }
}
CONF
  "${server_cpu[@]}" nginx -c "$data/nginx/nginx.conf" -p "$data/nginx" 2>/dev/null & nginx_pid=$!; pids+=($!)
  wait_port 18281; wait_port 18282
}

echo "== max rate of the collector alone (closed model, 64 connections)"
lt max http://127.0.0.1:18280 --connections 64 --duration "$DURATION"
max=$(python3 -c "import json; print(json.load(open('$data/max.json'))['requests_per_second'])")
# SHARE=0.25 measures at a quarter of the max rate: on a 2-vCPU machine, two collectors,
# the proxy and the load generator at half of one collector's max can saturate both cores.
half=$(python3 -c "print(round($max * ${SHARE:-0.5}))")
echo "== open model at ${SHARE:-0.5} of it: $half req/s"
start_mirrors 18290
lt "collector alone" http://127.0.0.1:18280 --rate "$half" --duration "$DURATION"
lt "proxy, shadow collector" http://127.0.0.1:18281 --rate "$half" --duration "$DURATION"
lt "nginx mirror, shadow collector" http://127.0.0.1:18282 --rate "$half" --duration "$DURATION"
echo "== the same with a shadow answering after 200 ms"
start_mirrors 18299
lt "proxy, slow shadow" http://127.0.0.1:18281 --rate "$half" --duration "$DURATION"
lt "nginx mirror, slow shadow" http://127.0.0.1:18282 --rate "$half" --duration "$DURATION"
curl -s http://127.0.0.1:18291/shadow/report | python3 -c "import json,sys; r=json.load(sys.stdin); print('proxy copies dropped:', r['dropped'], 'mirrored:', r['mirrored'])"
