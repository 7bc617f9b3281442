-- wrk script: the same 20 item_view events per request as batch20.lua, in the shape of
-- one SDK family: PROTOCOL=native | segment | posthog | snowplow. Ids are unique per
-- request, so the collector validates, claims and writes every event. Every request
-- says `cf-ipcountry: GB` (a trusted edge's header), so each protocol's events get the
-- same regional privacy policy.
-- Usage: PROTOCOL=posthog wrk -s scripts/wrk/protocols.lua http://127.0.0.1:8080/batch/

local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
  table.insert(threads, thread)
end

local UA = "Tollgate/5.12.0 (iPhone; iOS 19.1)"
local DEVICE = "5a1e0c8e-2d5b-4a7e-9f0b-6d8f1c2b3a4d"

-- base64url of a string, for Snowplow's ue_px.
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local function b64url(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = 2 + (b and 1 or 0) + (c and 1 or 0)
    for j = 1, chars do
      local k = math.floor(n / 64 ^ (4 - j)) % 64
      out[#out + 1] = B64:sub(k + 1, k + 1)
    end
  end
  return table.concat(out)
end

function init(args)
  counter = 0
  batch_size = tonumber(os.getenv("BATCH") or "20")
  protocol = os.getenv("PROTOCOL") or "native"
  run = os.getenv("RUN_ID") or tostring(os.time())
  headers = { ["Content-Type"] = "application/json", ["cf-ipcountry"] = "GB" }
  if protocol == "native" or protocol == "segment" then
    headers["Authorization"] = "Basic ZGV2Og==" -- base64("dev:")
  end
  -- The properties of the i-th event of every request, and Snowplow's base64url
  -- encoding of them, made once: encoding them per request would make wrk, not the
  -- collector, the bottleneck.
  props, ue_px = {}, {}
  for i = 1, batch_size do
    props[i] = string.format('"item_id":"item-%d","position":%d,"dwell_ms":1234', i, i)
    ue_px[i] = b64url('{"schema":"iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",'
      .. '"data":{"schema":"iglu:com.acme/item_view/jsonschema/1-0-0","data":{' .. props[i] .. '}}}')
  end
end

local function event(id, user, i)
  local props = props[i]
  if protocol == "segment" then
    return string.format('{"type":"track","event":"Item View","messageId":"%s","userId":"user-%d",'
      .. '"anonymousId":"%s","timestamp":"2026-11-29T10:00:00.250Z","properties":{%s},'
      .. '"context":{"app":{"version":"5.12.0"},"os":{"name":"iOS"},"library":{"name":"analytics-swift"},'
      .. '"locale":"en-GB","ip":"203.0.113.7","userAgent":"%s",'
      .. '"consent":{"categoryPreferences":{"Analytics":true,"Ads":false}}}}', id, user, DEVICE, props, UA)
  elseif protocol == "posthog" then
    return string.format('{"event":"item_view","distinct_id":"user-%d","uuid":"%s",'
      .. '"timestamp":"2026-11-29T10:00:00.250Z","properties":{"$lib":"posthog-ios","$lib_version":"3.9.0",'
      .. '"$os":"iOS","$device_id":"%s","$session_id":"s-8f7d6c5b","$app_version":"5.12.0",'
      .. '"$ip":"203.0.113.7","$raw_user_agent":"%s",%s}}', user, id, DEVICE, UA, props)
  elseif protocol == "snowplow" then
    return string.format('{"e":"ue","eid":"%s","aid":"bench","p":"mob","tv":"ios-6.0.0","tna":"sp",'
      .. '"uid":"user-%d","duid":"%s","sid":"s-8f7d6c5b","dtm":"1795946400250","stm":"1795946401000",'
      .. '"ip":"203.0.113.7","ua":"%s","ue_px":"%s"}', id, user, DEVICE, UA, ue_px[i])
  end
  return string.format('{"event_id":"%s","event_name":"item_view","schema_version":1,'
    .. '"user_id":"user-%d","device_id":"%s","session_id":"s-8f7d6c5b",'
    .. '"timestamp_event":"2026-11-29T10:00:00.250Z","surface":"home_feed","app_version":"5.12.0",'
    .. '"platform":"ios","experiment_ids":["ranker_v7","feed_density_b"],'
    .. '"consent":{"analytics":true,"ads":false},'
    .. '"context":{"locale":"en-GB","ip":"203.0.113.7","user_agent":"%s"},"properties":{%s}}',
    id, user, DEVICE, UA, props)
end

function request()
  counter = counter + 1
  local events = {}
  for i = 1, batch_size do
    local id = string.format("%s-%d-%d-%d", run, tid, counter, i)
    events[i] = event(id, (counter * 7 + i) % 100000, i)
  end
  local list = table.concat(events, ",")
  local body
  if protocol == "segment" then
    body = '{"sentAt":"2026-11-29T10:00:01.000Z","batch":[' .. list .. ']}'
  elseif protocol == "posthog" then
    body = '{"api_key":"dev","sent_at":"2026-11-29T10:00:01.000Z","batch":[' .. list .. ']}'
  elseif protocol == "snowplow" then
    body = '{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4","data":['
      .. list .. ']}'
  else
    body = '{"sent_at":"2026-11-29T10:00:01.000Z","events":[' .. list .. ']}'
  end
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = (non200 or 0) + 1
  end
end

function done(summary, latency, requests)
  local batch_size = tonumber(os.getenv("BATCH") or "20")
  local rps = summary.requests / (summary.duration / 1e6)
  io.write(string.format("requests/s: %.0f  events/s: %.0f  p50: %.2fms  p99: %.2fms  errors: %d\n",
    rps, rps * batch_size, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
