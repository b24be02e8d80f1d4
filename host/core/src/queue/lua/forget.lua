-- forget: deletes finished jobs' records, each with its place in the sets of finished jobs,
-- in its tenant's listing and in the dead letters, and its count: those past the history
-- retention or the cap, and those deleted by hand.
-- KEYS[1] the partition's set of finished jobs
-- KEYS[2] the partition's counts of jobs per state
-- KEYS[3] the partition's dead-letter stream
-- KEYS[4] the partition's index of job ids
-- KEYS[5] the partition's index of dead jobs
-- KEYS[6..] per job, in ARGV's order from ARGV[2], two keys: its hash and the index of its
-- tenant's jobs
-- ARGV[1] forget only jobs that finished at or before this (ms since the Unix epoch)
-- ARGV[2..] the jobs' ids
-- Returns how many records were deleted. A job that is not finished (retried from the dead
-- letters since the caller looked) is left alone but for its place in the sets of finished
-- jobs; one already gone leaves the sets and its listing.
-- Uses lib/history.lua.
local forgotten = 0
local moves = changes()
for i = 2, #ARGV do
  local id, key, index = ARGV[i], KEYS[2 * i + 2], KEYS[2 * i + 3]
  local job = redis.call('HMGET', key, 'status', 'tenant', 'dead_entry', 'finished_at')
  local status = job[1]
  local finished = status == 'completed' or status == 'cancelled' or status == 'dead'
  local due = finished and tonumber(job[4] or 0) <= tonumber(ARGV[1])
  if due or not finished then
    -- Deleted now, or not finished (so not this set's business), or gone already.
    redis.call('ZREM', KEYS[1], id)
  end
  if due or not status then
    redis.call('ZREM', index, id)
    redis.call('ZREM', KEYS[4], id)
  end
  if due then
    redis.call('DEL', key)
    if job[3] then
      redis.call('XDEL', KEYS[3], job[3])
    end
    if status == 'dead' then
      redis.call('ZREM', KEYS[5], job[2] .. ':' .. id)
    end
    count_move(moves, job[2], status, nil)
    forgotten = forgotten + 1
  end
end
write_changes(moves, KEYS[2])
return forgotten
