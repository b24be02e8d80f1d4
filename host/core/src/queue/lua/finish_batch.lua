-- finish_batch: stores the outcomes of attempts, each only if that attempt is still its
-- job's current one. A job whose cancel was asked for while it ran is cancelled when its
-- attempt failed or was handed back, rather than retried.
-- KEYS[1] the queue's delayed set
-- KEYS[2] the queue's dead-letter stream
-- KEYS[3], KEYS[4], KEYS[5] the queue's high, normal and low streams
-- KEYS[6] the partition's counts of jobs per state
-- KEYS[7] the partition's set of finished jobs
-- KEYS[8] the partition's index of dead jobs
-- KEYS[9..] per outcome, in ARGV's order, its job's key
-- ARGV[1] the consumer group; ARGV[2] the lifetime of a finished job's record, in seconds
-- ARGV[3] the channel that announces finished jobs
-- ARGV[4..] per outcome, twelve values:
--   the entry id; the stream's index (1 = high); the job id; the attempt;
--   the outcome: 'completed', 'cancelled', 'failed' or 'released' (handed back at shutdown);
--   the result (completed) or the error as JSON; the error kind ('' when completed);
--   the retry delay in ms, or -1 for no retry (failed only); the job log; run stats as JSON;
--   the last progress report as JSON ('' for none), so that a finished job shows its last
--   report even when the report's own write is still on its way; the attempt's entry in the
--   job's timeline as a JSON object (worker, error and run stats), to which the script adds
--   the outcome, start and end
-- Returns one reply per outcome, in order: the job's new status, or false when the attempt is
-- stale (the job is not running that attempt from that entry: a newer attempt owns it) and
-- nothing was written.
-- Uses lib/clock.lua, lib/dead_letter.lua, lib/history.lua and store/lua/pubsub.lua
-- (publish, listeners).
local now = now_ms()
local moves = changes(now)
local replies = {}
-- A finished job is announced only while somebody listens. A waiter subscribes first and
-- reads the job after, and this script runs whole: one that subscribes after this look
-- reads the job already finished.
local listened = listeners(ARGV[3]) > 0
-- Entries to acknowledge and delete, by stream: one XACK and one XDEL per stream at the end.
local done = {}
for i = 4, #ARGV, 12 do
  local entry, stream, id, attempt = ARGV[i], KEYS[2 + tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3]
  local outcome, payload, kind, delay = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], tonumber(ARGV[i + 7])
  local key = KEYS[9 + #replies]
  local current = redis.call('HMGET', key, 'attempt', 'status', 'max_attempts', 'task', 'error_kind',
    'entry', 'cancel_requested', 'tenant', 'started_at', 'created_at')
  local status = false
  if current[1] == attempt and current[2] == 'running' and current[6] == entry then
    done[stream] = done[stream] or {}
    table.insert(done[stream], entry)
    if current[7] and (outcome == 'failed' or outcome == 'released') then
      outcome, payload, kind = 'cancelled', '{"kind":"cancelled"}', 'cancelled'
    end
    if ARGV[i + 10] ~= '' and outcome ~= 'released' then
      redis.call('HSET', key, 'progress', ARGV[i + 10])
    end
    -- The attempt's entry in the timeline, written with the job's new state.
    local step, timeline = 'attempt:' .. attempt, '{"outcome":"' .. outcome .. '","started_at":'
      .. (current[9] or 0) .. ',"ended_at":' .. now .. ',' .. string.sub(ARGV[i + 11], 2)
    if outcome == 'released' then
      redis.call('HSET', key, 'status', 'pending', 'attempt', tonumber(attempt) - 1)
      redis.call('XADD', stream, '*', 'id', id)
      status = 'pending'
    elseif outcome == 'completed' then
      status = 'completed'
      redis.call('HSET', key, 'status', status, 'result', payload, 'finished_at', now,
        'log', ARGV[i + 8], 'stats', ARGV[i + 9], step, timeline)
      if current[5] then
        redis.call('HDEL', key, 'error', 'error_kind')
      end
    elseif outcome == 'cancelled' then
      status = 'cancelled'
    elseif delay >= 0 and tonumber(attempt) < tonumber(current[3]) then
      status = 'retrying'
      local run_at = tonumber(now) + delay
      redis.call('HSET', key, 'status', status, 'error', payload, 'error_kind', kind,
        'run_at', run_at, 'log', ARGV[i + 8], 'stats', ARGV[i + 9], step, timeline)
      redis.call('ZADD', KEYS[1], run_at, id)
    else
      status = 'dead'
      local dead = append_dead_letter(KEYS[2], KEYS[8], current[8], current[10], id, current[4],
        payload, kind, attempt, now)
      redis.call('HSET', key, 'dead_entry', dead)
    end
    if status == 'cancelled' or status == 'dead' then
      redis.call('HSET', key, 'status', status, 'error', payload, 'error_kind', kind,
        'finished_at', now, 'log', ARGV[i + 8], 'stats', ARGV[i + 9], step, timeline)
    end
    count_move(moves, current[8], 'running', status)
    if status == 'completed' or status == 'cancelled' or status == 'dead' then
      finished_job(moves, key, id, ARGV[2])
      if listened then
        publish(ARGV[3], id)
      end
    end
  end
  replies[#replies + 1] = status
end
for stream, entries in pairs(done) do
  redis.call('XACK', stream, ARGV[1], unpack(entries))
  redis.call('XDEL', stream, unpack(entries))
end
write_changes(moves, KEYS[6], KEYS[7])
return replies
