# Shared by the benchmark scripts (sourced, not run): CPU pinning, process cleanup, and
# waiting for a port. Expects `set -euo pipefail` and the repository as the working dir.

DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-64}
export BATCH=${BATCH:-20}
if [ "${NEED_WRK:-1}" = 1 ]; then
  command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
fi

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

# The Kafka test broker (tansu, installed by scripts/test-deps.sh), or empty.
tansu=${TANSU:-${HOME:-/root}/.cache/tollgate/tansu/bin/tansu}
[ -x "$tansu" ] || tansu=
# Starts the test broker on 127.0.0.1:19092 (in memory, on the load generator's CPU)
# with the collector's two topics.
start_kafka_broker() {
  mkdir -p "$data/tansu"
  (cd "$data/tansu" && env -u STORAGE_ENGINE -u LISTENER_URL -u ADVERTISED_LISTENER_URL \
    "${load_cpu[@]}" "$tansu" broker --listener-url tcp://127.0.0.1:19092 \
    --advertised-listener-url tcp://127.0.0.1:19092 --storage-engine memory://tansu/ --silent) &
  pids+=($!)
  wait_port 19092
  "$tansu" topic create --broker tcp://127.0.0.1:19092 --partitions 3 tollgate.events >/dev/null
  "$tansu" topic create --broker tcp://127.0.0.1:19092 --partitions 1 tollgate.quarantine >/dev/null
}
