-- promote: moves delayed jobs and retries that are due onto their streams.
-- KEYS[1] the partition's delayed set
-- KEYS[2], KEYS[3], KEYS[4] the partition's high, normal and low streams
-- KEYS[5] the partition's counts of jobs per state
-- KEYS[6..] the keys of the jobs to look at, in ARGV's order
-- ARGV[1..] the ids of the jobs to look at (the caller read them from the delayed set)
-- Returns how many jobs were moved. A job not yet due by Redis's clock stays; one another
-- promoter moved already is skipped; due ids of jobs cancelled or gone are dropped.
-- Uses lib/clock.lua and lib/history.lua.
local now = tonumber(now_ms())
local moves = changes(now)
local streams = {high = KEYS[2], normal = KEYS[3], low = KEYS[4]}
local moved = 0
for i, id in ipairs(ARGV) do
  local due = redis.call('ZSCORE', KEYS[1], id)
  if due and tonumber(due) <= now then
    redis.call('ZREM', KEYS[1], id)
    local job = KEYS[5 + i]
    local fields = redis.call('HMGET', job, 'status', 'priority', 'tenant')
    if fields[1] == 'scheduled' or fields[1] == 'retrying' then
      redis.call('HSET', job, 'status', 'pending')
      count_move(moves, fields[3], fields[1], 'pending')
      redis.call('XADD', streams[fields[2]] or KEYS[3], '*', 'id', id)
      moved = moved + 1
    end
  end
end
write_changes(moves, KEYS[5])
return moved
