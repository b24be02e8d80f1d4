-- enqueue: creates a job and queues it now, or schedules it for later.
-- KEYS[1] the job hash
-- KEYS[2] the stream of the job's priority
-- KEYS[3] the queue's delayed set
-- KEYS[4] the idempotency key, claimed with SET NX (any key of the queue when ARGV[4] is '')
-- KEYS[5] the index of the tenant's jobs on the queue
-- ARGV[1] the job id
-- ARGV[2] run at, in ms since the epoch ('0' = none)
-- ARGV[3] run this many ms after now, when ARGV[2] is '0' ('0' runs now)
-- ARGV[4] the idempotency key's value ('' = none); ARGV[5] its lifetime in seconds
-- ARGV[6..] field, value pairs of the job hash
-- Returns {job id, 1} for a new job, or {existing job id, 0} when the idempotency key was
-- used before.
-- Uses lib/clock.lua.
if ARGV[4] ~= '' and not redis.call('SET', KEYS[4], ARGV[1], 'NX', 'EX', ARGV[5]) then
  return {redis.call('GET', KEYS[4]), 0}
end
local now = tonumber(now_ms())
local run_at = tonumber(ARGV[2])
if run_at == 0 then
  run_at = now + tonumber(ARGV[3])
end
-- One HSET writes the whole hash, status and due time included.
local scheduled = run_at > now
if not scheduled then
  run_at = now
end
redis.call('HSET', KEYS[1], 'created_at', now, 'attempt', 0,
  'status', scheduled and 'scheduled' or 'pending', 'run_at', run_at, unpack(ARGV, 6))
redis.call('ZADD', KEYS[5], now, ARGV[1])
if scheduled then
  redis.call('ZADD', KEYS[3], run_at, ARGV[1])
else
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
end
return {ARGV[1], 1}
