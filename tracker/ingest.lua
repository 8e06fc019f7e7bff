-- Store one frame's pings of one device atomically.
--
-- KEYS: 1 device hash, 2 history zset, 3 cell index zset, 4 heat hash
-- ARGV: 1 device id, 2 pub/sub channel, 3 history retention (s),
--       4 jump speed limit (m/s), 5 jump confirmation window (s),
--       then 6 values per ping: t, lat, lon, accuracy (m, -1 if unknown),
--       cell score, ping JSON
--
-- Per ping the reply contains one status letter:
--   d  duplicate: a ping with the same fix time is already stored
--   l  stored, and it became the latest position
--   h  stored in history only: older than the latest position
--   j  stored in history only: it implies a jump faster than the limit
--      from the latest position and no second fix has confirmed it yet
-- The reply is {statuses, open job ids, interval advice}.

local dev, hist, cells, heat = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local device_id, channel = ARGV[1], ARGV[2]
local retention_s = tonumber(ARGV[3])
local max_speed_mps = tonumber(ARGV[4])
local confirm_window_s = tonumber(ARGV[5])

local EARTH_RADIUS_M = 6371008.8

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

local state = redis.call('HMGET', dev, 't', 'lat', 'lon', 'acc', 'cell',
                         'pt', 'plat', 'plon', 'pacc', 'jobs', 'interval')
local cur_t, cur_lat, cur_lon, cur_acc = tonumber(state[1]), tonumber(state[2]),
                                         tonumber(state[3]), tonumber(state[4]) or 0
local old_cell = state[5]
local pend_t, pend_lat, pend_lon, pend_acc = tonumber(state[6]), tonumber(state[7]),
                                             tonumber(state[8]), tonumber(state[9]) or 0
local pend_base = nil  -- index into ARGV of a new jump candidate

local statuses = {}
local latest = nil  -- index into ARGV of the new latest ping
local max_t = nil
local n = (#ARGV - 5) / 6

for i = 0, n - 1 do
  local base = 6 + i * 6
  local t_text = ARGV[base]
  local t = tonumber(t_text)
  local lat, lon = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local acc = tonumber(ARGV[base + 3])
  local status
  if redis.call('ZCOUNT', hist, t_text, t_text) > 0 then
    status = 'd'
  else
    redis.call('ZADD', hist, t_text, ARGV[base + 5])
    if max_t == nil or t > max_t then max_t = t end
    if cur_t ~= nil and t <= cur_t then
      status = 'h'
    elseif cur_t ~= nil and is_jump(cur_t, cur_lat, cur_lon, cur_acc, t, lat, lon, acc) then
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

if latest ~= nil then
  local cell = ARGV[latest + 4]
  redis.call('HSET', dev, 't', ARGV[latest], 'lat', ARGV[latest + 1],
             'lon', ARGV[latest + 2], 'acc', ARGV[latest + 3],
             'cell', cell, 'fix', ARGV[latest + 5])
  redis.call('HDEL', dev, 'pt', 'plat', 'plon', 'pacc')
  if cell ~= old_cell then
    redis.call('ZADD', cells, cell, device_id)
    if old_cell then
      if redis.call('HINCRBY', heat, old_cell, -1) <= 0 then
        redis.call('HDEL', heat, old_cell)
      end
    end
    redis.call('HINCRBY', heat, cell, 1)
  end
  redis.call('PUBLISH', channel, '{"type":"position","contractor_id":"' .. device_id ..
             '","fix":' .. ARGV[latest + 5] .. '}')
elseif pend_base ~= nil then
  redis.call('HSET', dev, 'pt', ARGV[pend_base], 'plat', ARGV[pend_base + 1],
             'plon', ARGV[pend_base + 2], 'pacc', ARGV[pend_base + 3])
end

if max_t ~= nil then
  local newest = math.max(max_t, cur_t or max_t)
  redis.call('ZREMRANGEBYSCORE', hist, '-inf', '(' .. (newest - retention_s))
  redis.call('EXPIRE', hist, math.ceil(retention_s))
end

return {statuses, state[10] or '', state[11] or ''}
