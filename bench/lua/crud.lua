-- The CRUD mix on Patient and Observation. args: <data.lua> [comma-separated op list]
-- Ops: cp/co create Patient/Observation (POST), rp/ro read by id (GET), up/uo update (PUT),
-- so Observation?subject&code, sn Patient?family&birthdate, si Patient?identifier.
-- The op list is walked round robin (the default mix is 20 slots, see bench/crud.py).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local D
local mix = {}
local step = 0
local upd = 0
local fresh = {Patient = {}, Observation = {}}
local FRESH_MAX = 2000
local H = {["Content-Type"] = "application/fhir+json", ["Accept"] = "application/fhir+json"}
local GH = {["Accept"] = "application/fhir+json"}

function init(args)
  D = dofile(args[1])
  local list = args[2] or D.mix
  for op in string.gmatch(list, "[^,]+") do mix[#mix + 1] = op end
  math.randomseed(1000 + (tid or 0))
  step = (tid or 0) * 3
end

local function pick(t) return t[math.random(#t)] end

local function read_id(rtype, pool)
  local f = fresh[rtype]
  if #f > 0 and math.random() < 0.5 then return f[math.random(#f)] end
  return pick(pool)
end

-- partition of the pool per thread, walked in order: two in-flight updates never hit one id
local function update_index(n)
  upd = upd + 1
  return ((upd * (nthreads or 1) + (tid or 0)) % n) + 1
end

local builders = {
  cp = function() return wrk.format("POST", "/fhir/Patient", H, pick(D.patient_bodies)) end,
  co = function()
    local body = string.gsub(pick(D.obs_bodies), "@@P@@", pick(D.patients))
    return wrk.format("POST", "/fhir/Observation", H, body)
  end,
  rp = function() return wrk.format("GET", "/fhir/Patient/" .. read_id("Patient", D.patients), GH) end,
  ro = function() return wrk.format("GET", "/fhir/Observation/" .. read_id("Observation", D.observations), GH) end,
  up = function()
    local id = D.patients[update_index(#D.patients)]
    local body = string.gsub(pick(D.patient_put), "@@I@@", id)
    return wrk.format("PUT", "/fhir/Patient/" .. id, H, body)
  end,
  uo = function()
    local i = update_index(#D.observations)
    local id = D.observations[i]
    local body = string.gsub(string.gsub(pick(D.obs_put), "@@I@@", id), "@@P@@", D.obs_subject[i])
    return wrk.format("PUT", "/fhir/Observation/" .. id, H, body)
  end,
  so = function() return wrk.format("GET", pick(D.search_obs), GH) end,
  sn = function() return wrk.format("GET", pick(D.search_name), GH) end,
  si = function() return wrk.format("GET", pick(D.search_ident), GH) end,
}

function request()
  step = step + 1
  local op = mix[(step % #mix) + 1]
  ops[op] = (ops[op] or 0) + 1
  return builders[op]()
end

function response(status, headers, body)
  note_status(status, body)
  local loc = headers["location"] or headers["Location"]
  if loc then
    local rtype, id = string.match(loc, "/fhir/(%a+)/([^/]+)/_history")
    local f = rtype and fresh[rtype]
    if f then
      if #f < FRESH_MAX then f[#f + 1] = id else f[math.random(FRESH_MAX)] = id end
    end
  end
end
