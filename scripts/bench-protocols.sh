#!/usr/bin/env bash
# Events/s of tollgate-collector per ingest protocol, in one run on one collector: the
# same 20 item_view events per request as native batches, Segment batches, PostHog
# batches and Snowplow tp2 POSTs (scripts/wrk/protocols.lua), each ÷ native.
# Every request comes with `cf-ipcountry: GB` from a trusted edge, so every protocol's
# events get the shipped UK privacy policy.
#
#   scripts/bench-protocols.sh             # 20 s per protocol, 64 connections
#   DURATION=10s ROUNDS=3 scripts/bench-protocols.sh   # rounds, each in another order
#
# Loopback only; the collector on CPU 0 and wrk on CPU 1 where taskset exists.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tollgate-collector
. scripts/bench-lib.sh

# The shipped policies, believing the region header from loopback (the bench's edge).
sed 's|^trusted_proxies = .*|trusted_proxies = ["127.0.0.1/32"]|' config/privacy.toml > "$data/privacy.toml"
TOLLGATE_PRIVACY__FILE="$data/privacy.toml" RUST_LOG=warn "${server_cpu[@]}" \
  "$target/tollgate-collector" --listen 127.0.0.1:18085 --admin-listen 127.0.0.1:19095 \
  --data-dir "$data/collector" & pids+=($!)
wait_port 18085

declare -A path=(
  [native]=/v1/events [segment]=/v1/batch [posthog]=/batch/
  [snowplow]=/com.snowplowanalytics.snowplow/tp2
)
# Each round starts one protocol later, so no protocol always runs on the fullest log.
order=(native segment posthog snowplow)
for round in $(seq "${ROUNDS:-1}"); do
  shift_by=$(( (round - 1) % 4 ))
  for protocol in "${order[@]:$shift_by}" "${order[@]:0:$shift_by}"; do
    line=$(PROTOCOL=$protocol RUN_ID="r$round-$protocol-$$" "${load_cpu[@]}" wrk -t1 \
      -c"$CONNECTIONS" -d"$DURATION" -s scripts/wrk/protocols.lua \
      "http://127.0.0.1:18085${path[$protocol]}" | tail -1)
    echo "$protocol $line" >> "$data/results.txt"
    echo "== round $round, $protocol: $line"
  done
done
python3 - "$data/results.txt" <<'PY'
import sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    parts = line.split()
    rows[parts[0]].append(float(parts[parts.index("events/s:") + 1]))
native = rows["native"]
for protocol in ("native", "segment", "posthog", "snowplow"):
    values = rows[protocol]
    ratios = " ".join("%.2f" % (v / n) for v, n in zip(values, native))
    print("== %-8s events/s %s   ÷ native (per round): %s" % (protocol, " ".join("%.0f" % v for v in values), ratios))
PY
rejected=$(cat "$data"/collector/quarantine/*.ndjson 2>/dev/null | wc -l || true)
logged=$(cat "$data"/collector/events/*.ndjson | wc -l)
echo "== events logged: $logged, quarantined: $rejected"
grep -ho '"api":"[a-z]*"\|"privacy_policy":"[a-z_@0-9]*"' "$data"/collector/events/*.ndjson | sort | uniq -c
