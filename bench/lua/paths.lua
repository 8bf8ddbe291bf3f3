-- GET a list of paths (one per line in the file given as argument), round robin; each thread
-- starts at a different place in the list. Used for search latency. An optional second argument is
-- sent as the Authorization header (a bearer token).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local reqs = {}
local i = 0

function init(args)
  local headers = {["Accept"] = "application/fhir+json"}
  if args[2] ~= nil and #args[2] > 0 then headers["Authorization"] = args[2] end
  for line in io.lines(args[1]) do
    if #line > 0 then
      reqs[#reqs + 1] = wrk.format("GET", line, headers)
    end
  end
  i = (tid or 0) * 7919
end

function request()
  i = i + 1
  return reqs[(i % #reqs) + 1]
end

function response(status, headers, body)
  note_status(status, body)
end
