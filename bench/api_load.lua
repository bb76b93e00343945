-- wrk script of bench/api_load.py: one request shape per run, read from the environment.
--
--   WRK_METHOD     GET or POST (default GET)
--   WRK_PATHS      comma-separated paths, taken in turn (e.g. several job ids)
--   WRK_KEYS       comma-separated API keys, taken in turn (one tenant; the rate limit is per key)
--   WRK_BODY_FILE  a JSON request body (sent with Content-Type: application/json)
--
-- done() prints one line `WRK_JSON {...}` (latencies in microseconds, from wrk's histogram).

local keys, paths = {}, {}
local method, body = "GET", nil
local counter = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_index", #threads)
end

local function split(text)
  local out = {}
  for item in string.gmatch(text or "", "[^,]+") do
    table.insert(out, item)
  end
  return out
end

function init(args)
  keys = split(os.getenv("WRK_KEYS"))
  paths = split(os.getenv("WRK_PATHS") or "/")
  method = os.getenv("WRK_METHOD") or "GET"
  local body_file = os.getenv("WRK_BODY_FILE")
  if body_file and body_file ~= "" then
    local handle = assert(io.open(body_file, "rb"))
    body = handle:read("*a")
    handle:close()
  end
  -- Threads start at different offsets so that they do not all use the same key at once.
  counter = (thread_index or 1) * 7919
end

function request()
  counter = counter + 1
  local headers = {}
  if #keys > 0 then
    headers["Authorization"] = "Bearer " .. keys[counter % #keys + 1]
  end
  if body then
    headers["Content-Type"] = "application/json"
  end
  return wrk.format(method, paths[counter % #paths + 1], headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "errors_connect": %d, "errors_read": %d, '
      .. '"errors_write": %d, "errors_status": %d, "errors_timeout": %d, "mean_us": %.1f, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max
  ))
end
