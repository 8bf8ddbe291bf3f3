-- POST the bodies listed in a file (one body file path per line), round robin, to a path.
-- args: <list file> <path>. Used for transaction-bundle load and for the echo ceiling.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local reqs = {}
local i = 0

function init(args)
  local path = args[2] or "/fhir"
  local headers = {["Content-Type"] = "application/fhir+json", ["Accept"] = "application/fhir+json"}
  for name in io.lines(args[1]) do
    if #name > 0 then
      local f = assert(io.open(name, "rb"))
      reqs[#reqs + 1] = wrk.format("POST", path, headers, f:read("*a"))
      f:close()
    end
  end
  i = (tid or 0) * 13
end

function request()
  i = i + 1
  ops.post = (ops.post or 0) + 1
  return reqs[(i % #reqs) + 1]
end

function response(status, headers, body)
  note_status(status, body)
end
