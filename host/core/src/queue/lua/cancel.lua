-- cancel: cancels a job. A job that has not started never will; a running one is told to
-- stop through the queue's cancel channel, and its worker stores the outcome.
-- KEYS[1] the job hash
-- KEYS[2] the queue's delayed set
-- KEYS[3] the partition's counts of jobs per state
-- KEYS[4] the partition's set of finished jobs
-- ARGV[1] the job id; ARGV[2] the lifetime of a finished job's record, in seconds
-- ARGV[3] the cancel channel; ARGV[4] the channel that announces finished jobs
-- Returns the job's status after the call ('cancelled', 'cancelling', or the finished
-- status it already had), or false when there is no such job.
-- Uses lib/clock.lua, lib/history.lua and store/lua/pubsub.lua (publish).
local job = redis.call('HMGET', KEYS[1], 'status', 'tenant')
local status = job[1]
if not status then
  return false
end
if status == 'pending' or status == 'scheduled' or status == 'retrying' then
  local now = now_ms()
  local moves = changes(now)
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'error_kind', 'cancelled',
    'error', '{"kind":"cancelled"}', 'finished_at', now)
  count_move(moves, job[2], status, 'cancelled')
  finished_job(moves, KEYS[1], ARGV[1], ARGV[2])
  write_changes(moves, KEYS[3], KEYS[4])
  publish(ARGV[4], ARGV[1])
  return 'cancelled'
end
if status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', 1)
  publish(ARGV[3], ARGV[1])
  return 'cancelling'
end
return status
