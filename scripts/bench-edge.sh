#!/usr/bin/env bash
# The cost of the production edge on the collector, same load, same run: plain HTTP with
# every metric and an info-level span per request (the default), the same without the
# per-event data-quality metrics and with logs at warn (the least observability), HTTPS
# (TLS 1.3, HTTP/1.1), and OTLP trace export of every request and of 1 %.
#
#   scripts/bench-edge.sh                 # 20 s per variant, 64 connections, 20-event batches
#   DURATION=10s CONNECTIONS=64 scripts/bench-edge.sh
#
# Loopback only; servers on CPU 0, wrk on CPU 1 where taskset exists.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tollgate-collector
. scripts/bench-lib.sh

# A self-signed certificate for the TLS variant (wrk does not verify it).
python3 - "$data" <<'PY'
import subprocess, sys
d = sys.argv[1]
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem"], check=True, capture_output=True)
PY

# An OTLP/HTTP sink that accepts and discards spans.
"${load_cpu[@]}" python3 - 14318 >/dev/null 2>&1 <<'PY' & pids+=($!)
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY

run() { # name scheme port env...
  local name=$1 scheme=$2 port=$3; shift 3
  env "$@" "${server_cpu[@]}" "$target/tollgate-collector" --listen 127.0.0.1:$port \
    --admin-listen 127.0.0.1:$((port + 1000)) --data-dir "$data/$port" 2>/dev/null & local pid=$!
  wait_port "$port"
  echo "== $name"
  RUN_ID="edge$$-$port" "${load_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency \
    -s scripts/wrk/batch20.lua "$scheme://127.0.0.1:$port/v1/events" | tail -1 | tee "$data/$name.txt"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

run full http 18180 RUST_LOG=info
run minimal http 18181 RUST_LOG=warn TOLLGATE_TELEMETRY__DATA_QUALITY=false
run tls https 18182 RUST_LOG=info TOLLGATE_SERVER__TLS__CERT_FILE="$data/cert.pem" TOLLGATE_SERVER__TLS__KEY_FILE="$data/key.pem"
run otlp http 18183 RUST_LOG=info TOLLGATE_TELEMETRY__OTLP_ENDPOINT=http://127.0.0.1:14318
run otlp-1pct http 18184 RUST_LOG=info TOLLGATE_TELEMETRY__OTLP_ENDPOINT=http://127.0.0.1:14318 \
  TOLLGATE_TELEMETRY__TRACE_SAMPLE_RATIO=0.01

ev() { awk '{print $4}' "$data/$1.txt"; }
ratio() { awk -v a="$(ev "$1")" -v b="$(ev "$2")" 'BEGIN{printf "%.3f", a/b}'; }
echo "== observability (data-quality metrics + info logs and spans) ÷ minimal: $(ratio full minimal)"
echo "== TLS ÷ plain HTTP: $(ratio tls full)"
echo "== OTLP trace export, every request ÷ no export: $(ratio otlp full)"
echo "== OTLP trace export, 1 % of requests ÷ no export: $(ratio otlp-1pct full)"
