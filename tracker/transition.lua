-- Change a job's status (or record a flag event) if its status is one of the expected ones.
--
-- KEYS: 1 job hash, 2 job timeline stream, 3 organisation event stream,
--       4 contractor's device hash, 5 set of open job ids
-- ARGV: 1 expected statuses (comma-separated), 2 new status, 3 flags JSON,
--       4 event JSON, 5 timeline length, 6 event stream length,
--       7 contractor id, 8 job id, 9 "1" if the new status is active
--       (en route or on site), 10 "1" if it is open, 11 pub/sub channel,
--       then field/value pairs to set on the job hash.
-- Returns the event's id in the organisation stream, or false when the
-- job's status is not one of the expected ones.

local job, timeline, org_events, dev, open_jobs = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local current = redis.call('HGET', job, 'status')
if not current then return false end

local allowed = false
for status in string.gmatch(ARGV[1], '[^,]+') do
  if status == current then allowed = true end
end
if not allowed then return false end

redis.call('HSET', job, 'status', ARGV[2], 'flags', ARGV[3])
for i = 12, #ARGV, 2 do
  redis.call('HSET', job, ARGV[i], ARGV[i + 1])
end

redis.call('XADD', timeline, 'MAXLEN', '~', ARGV[5], '*', 'e', ARGV[4])
local id = redis.call('XADD', org_events, 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[4])

-- Keep the device's list of active jobs, which the ingest script returns.
local job_id = ARGV[8]
local active = {}
local listed = redis.call('HGET', dev, 'jobs')
if listed then
  for other in string.gmatch(listed, '[^,]+') do
    if other ~= job_id then active[#active + 1] = other end
  end
end
if ARGV[9] == '1' then active[#active + 1] = job_id end
if #active > 0 then
  redis.call('HSET', dev, 'jobs', table.concat(active, ','))
else
  redis.call('HDEL', dev, 'jobs', 'interval')
end

if ARGV[10] == '1' then
  redis.call('SADD', open_jobs, job_id)
else
  redis.call('SREM', open_jobs, job_id)
end

redis.call('PUBLISH', ARGV[11], '{"type":"event","id":"' .. id .. '","event":' .. ARGV[4] .. '}')
return id
