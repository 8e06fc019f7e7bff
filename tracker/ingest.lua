-- Store one frame's pings of one device atomically.
--
-- KEYS: 1 device hash, 2 history zset, 3 cell index zset, 4 heat hash
-- ARGV: 1 device id, 2 history retention (s), 3 jump speed limit (m/s),
--       4 jump confirmation window (s), then 6 values per ping: t, lat,
--       lon, accuracy (m, -1 if unknown), cell score, ping JSON
--
-- The device hash keeps t, lat, cell and fix (the latest ping's JSON),
-- plus pend ("t lat lon acc" of an unconfirmed jump) while there is one.
-- The jump filter reads the latest position's lon and accuracy from fix.
--
-- Per ping the reply contains one status letter:
--   d  duplicate: a ping with the same fix time is already stored
--   l  stored, and it became the latest position
--   h  stored in history only: older than the latest position
--   j  stored in history only: it implies a jump faster than the limit
--      from the latest position and no second fix has confirmed it yet
-- The reply is {statuses, active job ids, interval advice, job fields}: the
-- last holds, per active job, its hash fields named in JOB_FIELDS, so the
-- lifecycle needs no read of its own.

local dev, hist, cells, heat = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local device_id = ARGV[1]
local retention_s = tonumber(ARGV[2])
local max_speed_mps = tonumber(ARGV[3])
local confirm_window_s = tonumber(ARGV[4])

local EARTH_RADIUS_M = 6371008.8
-- keys.JOB_LOADED_FIELDS, in the same order.
local JOB_FIELDS = {'doc', 'status', 'visit', 'flags', 'eta_s', 'eta_t', 'awin',
                    'det', 'det_t', 'en_route_t', 'smoother'}
-- The history key's expiry is pushed forward only when it has dropped this
-- far below the retention, so a steady stream of pings sends one EXPIRE a
-- minute rather than one per frame.
local EXPIRE_SLACK_S = 60
-- Members per ZADD call: Lua's unpack is limited by the C stack size.
local ZADD_CHUNK = 1000

local function distance_m(lat1, lon1, lat2, lon2)
  local p1, p2 = math.rad(lat1), math.rad(lat2)
  local dp, dl = p2 - p1, math.rad(lon2 - lon1)
  local a = math.sin(dp / 2) ^ 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ^ 2
  return 2 * EARTH_RADIUS_M * math.asin(math.min(1, math.sqrt(a)))
end

-- True when moving from fix a to fix b needs more than the speed limit,
-- after both accuracy radii are granted.
local function is_jump(t1, lat1, lon1, acc1, t2, lat2, lon2, acc2)
  local dt = t2 - t1
  if dt <= 0 then return false end
  local slack = math.max(acc1, 0) + math.max(acc2, 0)
  local d = distance_m(lat1, lon1, lat2, lon2) - slack
  return d > max_speed_mps * dt
end

local state = redis.call('HMGET', dev, 't', 'fix', 'cell', 'pend', 'jobs', 'interval')
local cur_t, cur_lat, cur_lon, cur_acc = tonumber(state[1]), nil, nil, 0
if cur_t ~= nil and state[2] then
  local fix = cjson.decode(state[2])
  cur_lat, cur_lon, cur_acc = fix.lat, fix.lon, tonumber(fix.acc) or 0
end
local old_cell = state[3]
local had_pending = state[4] ~= false
local pend_t, pend_lat, pend_lon, pend_acc
if had_pending then
  local t, lat, lon, acc = string.match(state[4], '^(%S+) (%S+) (%S+) (%S+)$')
  pend_t, pend_lat, pend_lon, pend_acc = tonumber(t), tonumber(lat), tonumber(lon), tonumber(acc)
end
local pend_base = nil  -- index into ARGV of a new jump candidate

local n = (#ARGV - 4) / 6

-- Fix times above the newest one in history can't be duplicates, so a
-- batch in time order needs no lookup per ping. One ping costs one lookup
-- either way.
local newest_stored = nil
if n > 1 then
  local last = redis.call('ZRANGE', hist, -1, -1, 'WITHSCORES')
  newest_stored = tonumber(last[2]) or -math.huge
end

local statuses = {}
local added = {}  -- score, member pairs for ZADD
local added_t = {}  -- fix times added by this call, for duplicates inside it
local latest = nil  -- index into ARGV of the new latest ping
local max_t = nil

for i = 0, n - 1 do
  local base = 5 + i * 6
  local t_text = ARGV[base]
  local t = tonumber(t_text)
  local duplicate
  if added_t[t] then
    duplicate = true
  elseif newest_stored ~= nil and t > newest_stored then
    duplicate = false
  else
    duplicate = redis.call('ZCOUNT', hist, t_text, t_text) > 0
  end
  local status
  if duplicate then
    status = 'd'
  else
    added_t[t] = true
    added[#added + 1] = t_text
    added[#added + 1] = ARGV[base + 5]
    if max_t == nil or t > max_t then max_t = t end
    local lat, lon = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
    local acc = tonumber(ARGV[base + 3])
    if cur_t ~= nil and t <= cur_t then
      status = 'h'
    elseif cur_lat ~= nil and is_jump(cur_t, cur_lat, cur_lon, cur_acc, t, lat, lon, acc) then
      -- A second fix close to an earlier jump candidate confirms that the
      -- device really moved; otherwise this fix becomes the candidate.
      if pend_t ~= nil and t > pend_t and t - pend_t <= confirm_window_s
         and not is_jump(pend_t, pend_lat, pend_lon, pend_acc, t, lat, lon, acc) then
        status = 'l'
      else
        status = 'j'
        pend_t, pend_lat, pend_lon, pend_acc = t, lat, lon, acc
        pend_base = base
      end
    else
      status = 'l'
    end
    if status == 'l' then
      cur_t, cur_lat, cur_lon, cur_acc = t, lat, lon, acc
      latest = base
      pend_t, pend_base = nil, nil
    end
  end
  statuses[#statuses + 1] = status
end

for first = 1, #added, 2 * ZADD_CHUNK do
  redis.call('ZADD', hist, unpack(added, first, math.min(first + 2 * ZADD_CHUNK - 1, #added)))
end

if latest ~= nil then
  local cell = ARGV[latest + 4]
  if cell ~= old_cell then
    redis.call('HSET', dev, 't', ARGV[latest], 'lat', ARGV[latest + 1],
               'cell', cell, 'fix', ARGV[latest + 5])
    redis.call('ZADD', cells, cell, device_id)
    if old_cell then
      if redis.call('HINCRBY', heat, old_cell, -1) <= 0 then
        redis.call('HDEL', heat, old_cell)
      end
    end
    redis.call('HINCRBY', heat, cell, 1)
  else
    redis.call('HSET', dev, 't', ARGV[latest], 'lat', ARGV[latest + 1],
               'fix', ARGV[latest + 5])
  end
  if had_pending then
    redis.call('HDEL', dev, 'pend')
  end
elseif pend_base ~= nil then
  redis.call('HSET', dev, 'pend', ARGV[pend_base] .. ' ' .. ARGV[pend_base + 1] .. ' ' ..
             ARGV[pend_base + 2] .. ' ' .. ARGV[pend_base + 3])
end

if max_t ~= nil then
  local newest = math.max(max_t, cur_t or max_t)
  redis.call('ZREMRANGEBYSCORE', hist, '-inf', '(' .. (newest - retention_s))
  if redis.call('TTL', hist) < retention_s - EXPIRE_SLACK_S then
    redis.call('EXPIRE', hist, math.ceil(retention_s))
  end
end

-- Job keys share the device key's hash tag, so they live on the same slot.
local job_fields = {}
if state[5] and state[5] ~= '' then
  local org_prefix = string.sub(dev, 1, #dev - #device_id - #'dev:')
  for job_id in string.gmatch(state[5], '[^,]+') do
    job_fields[#job_fields + 1] = redis.call('HMGET', org_prefix .. 'job:' .. job_id,
                                             unpack(JOB_FIELDS))
  end
end

return {statuses, state[5] or '', state[6] or '', job_fields}
