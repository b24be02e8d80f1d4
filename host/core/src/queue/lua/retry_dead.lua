-- retry_dead: gives a dead job a new series of attempts under the same id, and takes it off
-- the dead-letter stream.
-- KEYS[1] the job hash
-- KEYS[2] the stream of the job's priority
-- KEYS[3] the queue's dead-letter stream
-- KEYS[4] the partition's counts of jobs per state
-- KEYS[5] the partition's set of finished jobs
-- KEYS[6] the partition's index of dead jobs
-- ARGV[1] the job id
-- Returns 1; 0 when its input is no longer kept (past the result retention), so it cannot
-- run again; false when the job is not dead (or gone).
-- Uses lib/history.lua.
local job = redis.call('HMGET', KEYS[1], 'status', 'dead_entry', 'tenant')
if job[1] ~= 'dead' then
  return false
end
if redis.call('HEXISTS', KEYS[1], 'input') == 0 then
  return 0
end
if job[2] then
  redis.call('XDEL', KEYS[3], job[2])
end
redis.call('PERSIST', KEYS[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], job[3] .. ':' .. ARGV[1])
local moves = changes()
count_move(moves, job[3], 'dead', 'pending')
write_changes(moves, KEYS[4])
redis.call('HINCRBY', KEYS[1], 'dead_retries', 1)
redis.call('HSET', KEYS[1], 'status', 'pending', 'attempt', 0)
redis.call('HDEL', KEYS[1], 'error', 'error_kind', 'finished_at', 'result', 'dead_entry')
redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
return 1
