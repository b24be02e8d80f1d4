-- start: a worker took a stream entry; begins the job's next attempt.
-- KEYS[1] the job hash
-- KEYS[2] the stream the entry came from
-- KEYS[3] the queue's dead-letter stream
-- ARGV[1] the entry id; ARGV[2] the worker id; ARGV[3] the job id; ARGV[4] the consumer group
-- ARGV[5] the retention of finished jobs, in seconds
-- Returns false when the job must not run (gone, cancelled, finished, or out of attempts
-- after its worker was lost: then it is dead); the entry is acknowledged and deleted.
-- Otherwise {attempt, max_attempts, task, digest, input, timeout_ms, created_at, backoff}:
-- the attempt
-- number fences every later write of this worker.
local function drop_entry()
  redis.call('XACK', KEYS[2], ARGV[4], ARGV[1])
  redis.call('XDEL', KEYS[2], ARGV[1])
end
local job = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'max_attempts', 'task')
local status = job[1]
if not status or (status ~= 'pending' and status ~= 'running') then
  drop_entry()
  return false
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if status == 'running' and tonumber(job[2]) >= tonumber(job[3]) then
  -- The worker running the last attempt was lost.
  local error = '{"kind":"worker_lost","message":"the worker running the last attempt stopped responding"}'
  redis.call('HSET', KEYS[1], 'status', 'dead', 'error', error, 'error_kind', 'worker_lost',
    'finished_at', now)
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100000, '*', 'id', ARGV[3], 'task', job[4],
    'error', error, 'error_kind', 'worker_lost', 'tries', job[2], 'failed_at', now)
  drop_entry()
  return false
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[2], 'started_at', now,
  'entry', ARGV[1])
local fields = redis.call('HMGET', KEYS[1], 'max_attempts', 'task', 'digest', 'input',
  'timeout_ms', 'created_at', 'backoff')
return {attempt, fields[1], fields[2], fields[3], fields[4], fields[5] or '', fields[6],
  fields[7]}
