-- start_batch: begins the next attempt of jobs whose stream entries this worker took (read
-- by an earlier call, by a blocking read or taken over), then reads the next new entries for
-- the worker's next call: their job keys are not known before they are read, and a script
-- touches only keys it was given.
-- KEYS[1] the partition's dead-letter stream
-- KEYS[2], KEYS[3], KEYS[4] the partition's high, normal and low streams
-- KEYS[5] the partition's counts of jobs per state
-- KEYS[6] the partition's set of finished jobs
-- KEYS[7] the partition's index of dead jobs
-- KEYS[8..] per entry, in ARGV's order, its job's key
-- ARGV[1] the worker id; ARGV[2] the consumer group; ARGV[3] the lifetime of a finished
-- job's record, in seconds; ARGV[4] the channel that announces finished jobs
-- ARGV[5] how many new entries to read (XREADGROUP, high before normal before low); 0 = none
-- ARGV[6..] per entry, three values: the entry id, the job id, the stream's index (1 = high)
-- Returns {started, read}. read: per new entry {entry id, stream index, job id}. started: one
-- reply per given entry, in order: {entry id, stream index, job id, start}, where
-- start is false when the job must not run, and the entry is acknowledged and deleted: the job
-- is gone or finished, or its worker was lost and it now finishes here (cancelled when a cancel
-- was asked for, else dead when that was its last attempt). Otherwise start is
-- {attempt, max_attempts, task, digest, input, timeout_ms, fuel, memory, created_at, backoff,
-- tenant, module, version, depth} (timeout_ms, fuel, memory, tenant, module, version and depth
-- '' when the job has none), as the worker's `StartedJob` reads it. The attempt number and the
-- entry id, stored as the job's `entry`, fence every later write: after a retry from the dead
-- letters the attempt numbers start again, the entry ids do not.
-- An attempt whose worker was lost gets its entry in the job's timeline (`attempt:N`) here.
-- Uses lib/clock.lua, lib/dead_letter.lua, lib/history.lua and store/lua/pubsub.lua
-- (publish).
local entries = {}
for i = 6, #ARGV, 3 do
  entries[#entries + 1] = {ARGV[i], tonumber(ARGV[i + 2]), ARGV[i + 1], KEYS[8 + #entries]}
end
local now = now_ms()
local moves = changes(now)
local replies = {}
for _, taken in ipairs(entries) do
  local entry, id, stream, key = taken[1], taken[3], KEYS[1 + taken[2]], taken[4]
  local job = redis.call('HMGET', key, 'status', 'attempt', 'max_attempts', 'task', 'digest',
    'input', 'timeout_ms', 'created_at', 'backoff', 'fuel', 'memory', 'cancel_requested',
    'tenant', 'module', 'version', 'depth', 'worker', 'started_at', 'run_at', 'traceparent')
  local status = job[1]
  local reply = false
  if status == 'running' then
    redis.call('HSET', key, 'attempt:' .. job[2], '{"outcome":"worker_lost","started_at":' ..
      (job[18] or 0) .. ',"ended_at":' .. now .. ',"worker":' .. cjson.encode(job[17] or '') .. '}')
  end
  if status == 'running' and job[12] then
    -- A cancel was asked for while the worker that ran it was lost.
    redis.call('HSET', key, 'status', 'cancelled', 'error', '{"kind":"cancelled"}',
      'error_kind', 'cancelled', 'finished_at', now)
    count_move(moves, job[13], 'running', 'cancelled')
    finished_job(moves, key, id, ARGV[3])
    publish(ARGV[4], id)
  elseif status == 'running' and tonumber(job[2]) >= tonumber(job[3]) then
    -- The worker running the last attempt was lost.
    local error = '{"kind":"worker_lost","message":"the worker running the last attempt stopped responding"}'
    local dead = append_dead_letter(KEYS[1], KEYS[7], job[13], job[8], id, job[4], error,
      'worker_lost', job[2], now)
    redis.call('HSET', key, 'status', 'dead', 'error', error, 'error_kind', 'worker_lost',
      'finished_at', now, 'dead_entry', dead)
    count_move(moves, job[13], 'running', 'dead')
    finished_job(moves, key, id, ARGV[3])
    publish(ARGV[4], id)
  elseif status == 'pending' or status == 'running' then
    local attempt = tostring(tonumber(job[2]) + 1)
    redis.call('HSET', key, 'status', 'running', 'attempt', attempt, 'entry', entry,
      'worker', ARGV[1], 'started_at', now)
    if status == 'pending' then
      count_move(moves, job[13], 'pending', 'running')
    end
    reply = {attempt, job[3], job[4], job[5], job[6], job[7] or '', job[10] or '', job[11] or '',
      job[8], job[9], job[13] or '', job[14] or '', job[15] or '', job[16] or '', job[19] or '',
      job[20] or ''}
  end
  if not reply then
    redis.call('XACK', stream, ARGV[2], entry)
    redis.call('XDEL', stream, entry)
  end
  replies[#replies + 1] = {entry, taken[2], id, reply}
end
write_changes(moves, KEYS[5], KEYS[6])
local read = {}
local want = tonumber(ARGV[5])
for index = 1, 3 do
  if want <= 0 then
    break
  end
  local new = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[1], 'COUNT', want, 'STREAMS',
    KEYS[1 + index], '>')
  if new then
    for _, item in ipairs(new[1][2]) do
      read[#read + 1] = {item[1], index, item[2][2]}
      want = want - 1
    end
  end
end
return {replies, read}
