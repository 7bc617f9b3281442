-- wrk script: POST native batches of 20 item_view events with ids unique per request
-- (so the collector really validates, claims and writes every event), Basic auth `dev`.
-- Usage: wrk -s scripts/wrk/batch20.lua http://127.0.0.1:8080/v1/events

local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  batch_size = tonumber(os.getenv("BATCH") or "20")
  run = os.getenv("RUN_ID") or tostring(os.time())
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Basic ZGV2Og==", -- base64("dev:")
  }
  template = '{"event_id":"%s-%d-%d-%d","event_name":"item_view","schema_version":1,'
    .. '"user_id":"user-%d","device_id":"5a1e0c8e-2d5b-4a7e-9f0b-6d8f1c2b3a4d",'
    .. '"session_id":"s-8f7d6c5b","timestamp_event":"2026-11-29T10:00:00.250Z",'
    .. '"surface":"home_feed","app_version":"5.12.0","platform":"ios",'
    .. '"experiment_ids":["ranker_v7","feed_density_b"],"consent":{"analytics":true,"ads":false},'
    .. '"context":{"locale":"en-GB","country":"GB","ip":"203.0.113.7","user_agent":"Tollgate/5.12.0 (iPhone; iOS 19.1)"},'
    .. '"properties":{"item_id":"item-%d","position":%d,"dwell_ms":1234}}'
end

function request()
  counter = counter + 1
  local events = {}
  for i = 1, batch_size do
    events[i] = string.format(template, run, tid, counter, i, (counter * 7 + i) % 100000, i, i)
  end
  local body = '{"sent_at":"2026-11-29T10:00:01.000Z","events":[' .. table.concat(events, ",") .. ']}'
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = (non200 or 0) + 1
  end
end

function done(summary, latency, requests)
  -- Runs in wrk's main Lua state, where init() never ran.
  local batch_size = tonumber(os.getenv("BATCH") or "20")
  local rps = summary.requests / (summary.duration / 1e6)
  io.write(string.format("requests/s: %.0f  events/s: %.0f  p50: %.2fms  p99: %.2fms  errors: %d\n",
    rps, rps * batch_size, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
