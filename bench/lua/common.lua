-- Shared by the wrk scripts: thread numbering and a machine-readable summary line.
-- setup() and done() run in wrk's main Lua state; request()/response() in each thread's own.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
  for _, t in ipairs(threads) do t:set("nthreads", #threads) end
end

-- Per-thread tables the scripts fill in (merged by done()).
ops = {}
statuses = {}
first_error = nil

-- Count a non-2xx status and keep the first error body seen by the thread.
function note_status(status, body)
  if status >= 300 then
    statuses[status] = (statuses[status] or 0) + 1
    if first_error == nil then first_error = status .. " " .. string.sub(body or "", 1, 600) end
  end
end

local function merge(name)
  local out = {}
  for _, t in ipairs(threads) do
    local tbl = t:get(name)
    if type(tbl) == "table" then
      for k, v in pairs(tbl) do out[tostring(k)] = (out[tostring(k)] or 0) + v end
    end
  end
  return out
end

local function encode(tbl)
  local parts = {}
  for k, v in pairs(tbl) do parts[#parts + 1] = string.format('"%s":%d', k, v) end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function json_string(text)
  return '"' .. string.gsub(text, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end) .. '"'
end

function done(summary, latency, requests)
  local e = summary.errors
  local err = "null"
  for _, t in ipairs(threads) do
    local fe = t:get("first_error")
    if type(fe) == "string" then err = json_string(fe) break end
  end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%f,"ops":%s,"statuses":%s,' ..
    '"first_error":%s}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    encode(merge("ops")), encode(merge("statuses")), err))
end
