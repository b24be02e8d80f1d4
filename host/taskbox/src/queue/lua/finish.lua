-- finish: stores the outcome of an attempt, if that attempt is still the job's current one.
-- KEYS[1] the job hash
-- KEYS[2] the stream the entry came from
-- KEYS[3] the queue's delayed set
-- KEYS[4] the queue's dead-letter stream
-- ARGV[1] the entry id; ARGV[2] the attempt; ARGV[3] the consumer group
-- ARGV[4] the outcome: 'completed', 'cancelled', 'failed' or 'released'
-- ARGV[5] the result (completed) or the error as JSON (failed, cancelled)
-- ARGV[6] the error kind ('' when completed)
-- ARGV[7] the retry delay in ms, or '-1' for no retry (failed only)
-- ARGV[8] the retention of finished jobs, in seconds
-- ARGV[9] the channel that announces finished jobs; ARGV[10] the job id
-- ARGV[11] the job log; ARGV[12] run statistics as JSON
-- Returns the job's new status, or false when the attempt is stale (a newer attempt owns the
-- job) and nothing was written.
local current = redis.call('HMGET', KEYS[1], 'attempt', 'status', 'max_attempts', 'task')
if current[1] ~= ARGV[2] or current[2] ~= 'running' then
  return false
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('XACK', KEYS[2], ARGV[3], ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'log', ARGV[11], 'stats', ARGV[12])
local outcome = ARGV[4]
local status
if outcome == 'released' then
  -- Handed back at shutdown: not an attempt; queued again at once.
  redis.call('HINCRBY', KEYS[1], 'attempt', -1)
  redis.call('HSET', KEYS[1], 'status', 'pending')
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[10])
  return 'pending'
elseif outcome == 'completed' then
  status = 'completed'
  redis.call('HSET', KEYS[1], 'status', status, 'result', ARGV[5], 'finished_at', now)
  redis.call('HDEL', KEYS[1], 'error', 'error_kind')
elseif outcome == 'cancelled' then
  status = 'cancelled'
  redis.call('HSET', KEYS[1], 'status', status, 'error', ARGV[5], 'error_kind', ARGV[6],
    'finished_at', now)
else
  local delay = tonumber(ARGV[7])
  if delay >= 0 and tonumber(ARGV[2]) < tonumber(current[3]) then
    redis.call('HSET', KEYS[1], 'status', 'retrying', 'error', ARGV[5], 'error_kind', ARGV[6],
      'run_at', now + delay)
    redis.call('ZADD', KEYS[3], now + delay, ARGV[10])
    return 'retrying'
  end
  status = 'dead'
  redis.call('HSET', KEYS[1], 'status', status, 'error', ARGV[5], 'error_kind', ARGV[6],
    'finished_at', now)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'id', ARGV[10], 'task', current[4],
    'error', ARGV[5], 'error_kind', ARGV[6], 'tries', ARGV[2], 'failed_at', now)
end
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('PUBLISH', ARGV[9], ARGV[10])
return status
