-- promote: moves delayed jobs and retries that are due onto their streams.
-- KEYS[1] the queue's delayed set
-- KEYS[2], KEYS[3], KEYS[4] the queue's high, normal and low streams
-- ARGV[1] the most jobs to move; ARGV[2] the prefix of the queue's job keys
-- Returns how many jobs were moved (due ids of jobs cancelled or gone are dropped, not moved).
-- Uses lib/clock.lua.
local now = tonumber(now_ms())
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local streams = {high = KEYS[2], normal = KEYS[3], low = KEYS[4]}
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local job = ARGV[2] .. id
  local fields = redis.call('HMGET', job, 'status', 'priority')
  if fields[1] == 'scheduled' or fields[1] == 'retrying' then
    redis.call('HSET', job, 'status', 'pending')
    redis.call('XADD', streams[fields[2]] or KEYS[3], '*', 'id', id)
    moved = moved + 1
  end
end
return moved
