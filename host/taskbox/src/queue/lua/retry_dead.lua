-- retry_dead: gives a dead job a new series of attempts under the same id.
-- KEYS[1] the job hash
-- KEYS[2] the stream of the job's priority
-- ARGV[1] the job id
-- Returns 1, or false when the job is not dead (or gone).
if redis.call('HGET', KEYS[1], 'status') ~= 'dead' then
  return false
end
redis.call('PERSIST', KEYS[1])
redis.call('HINCRBY', KEYS[1], 'dead_retries', 1)
redis.call('HSET', KEYS[1], 'status', 'pending', 'attempt', 0)
redis.call('HDEL', KEYS[1], 'error', 'error_kind', 'finished_at', 'result')
redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
return 1
