-- history (prepended to the scripts that change a job's state): the partition's counts of
-- jobs per state and its sets of finished jobs. A script gathers its changes in a table
-- (`changes(now)`) and writes them once at its end (`write_changes`): one HINCRBY per
-- tenant and state and one ZADD per set, however many jobs the call moved, since these
-- scripts run for every job.
local function changes(now)
  return {now = now, counts = {}, finished = {}}
end
-- count_move(changes, tenant, from, to) counts one of `tenant`'s jobs out of state `from`
-- and into state `to`; either may be nil (a job created or deleted). Counts are kept by
-- tenant, then state, so that no string is made per job.
local function count_move(changes, tenant, from, to)
  local counts = changes.counts[tenant]
  if not counts then
    counts = {}
    changes.counts[tenant] = counts
  end
  if from then
    counts[from] = (counts[from] or 0) - 1
  end
  if to then
    counts[to] = (counts[to] or 0) + 1
  end
end
-- finished_job(changes, key, id, ttl) keeps the record of job `id` (hash `key`), which
-- finished at `changes.now`: it goes into the set of finished jobs by finish time, along
-- which trimming drops input, result and log after the result retention and the record
-- after the history retention or past the cap. `ttl` (seconds, past the history retention)
-- only bounds a record nobody trims: trimming the set is what drops it, and keeps the counts
-- and the listing right.
local function finished_job(changes, key, id, ttl)
  redis.call('EXPIRE', key, ttl)
  table.insert(changes.finished, changes.now)
  table.insert(changes.finished, id)
end
-- write_changes(changes, states, finished) writes the gathered changes to the partition's
-- hash of counts `states` (fields `tenant:status`) and its set of finished jobs `finished`.
local function write_changes(changes, states, finished)
  for tenant, counts in pairs(changes.counts) do
    for status, delta in pairs(counts) do
      if delta ~= 0 then
        redis.call('HINCRBY', states, tenant .. ':' .. status, delta)
      end
    end
  end
  -- In pieces of 500 jobs (score and id each): unpack has a limit.
  local members = changes.finished
  for first = 1, #members, 1000 do
    local last = math.min(first + 999, #members)
    redis.call('ZADD', finished, unpack(members, first, last))
  end
end
