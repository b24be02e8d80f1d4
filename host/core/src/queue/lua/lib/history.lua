-- history (prepended to the scripts that change a job's state): the partition's counts of
-- jobs per state and its sets of finished jobs. A script gathers its changes in a table
-- (`changes(now)`) and writes them once at its end (`write_changes`): one HINCRBY per
-- tenant and state and one ZADD per set, however many jobs the call moved, since these
-- scripts run for every job.
local function changes(now)
  return {now = now, counts = {}, finished = {}}
end
-- count_move(changes, tenant, from, to) counts one of `tenant`'s jobs out of state `from`
-- and into state `to`; either may be nil (a job created or deleted).
local function count_move(changes, tenant, from, to)
  if from then
    local field = tenant .. ':' .. from
    changes.counts[field] = (changes.counts[field] or 0) - 1
  end
  if to then
    local field = tenant .. ':' .. to
    changes.counts[field] = (changes.counts[field] or 0) + 1
  end
end
-- finished_job(changes, key, id, ttl) keeps the record of job `id` (hash `key`), which
-- finished at `changes.now`: it goes into the sets of finished jobs (kept for the history
-- retention and trimmed to its cap) and of jobs with their results (whose input, result and
-- log go after the result retention). `ttl` (seconds, past the history retention) only
-- bounds a record nobody trims: trimming the sets is what drops it, and keeps the counts
-- and the listing right.
local function finished_job(changes, key, id, ttl)
  redis.call('EXPIRE', key, ttl)
  table.insert(changes.finished, changes.now)
  table.insert(changes.finished, id)
end
-- write_changes(changes, states, finished, results) writes the gathered changes to the
-- partition's hash of counts `states` (fields `tenant:status`) and its sets `finished` and
-- `results`.
local function write_changes(changes, states, finished, results)
  for field, delta in pairs(changes.counts) do
    if delta ~= 0 then
      redis.call('HINCRBY', states, field, delta)
    end
  end
  -- In pieces of 500 jobs (score and id each): unpack has a limit.
  local members = changes.finished
  for first = 1, #members, 1000 do
    local last = math.min(first + 999, #members)
    redis.call('ZADD', finished, unpack(members, first, last))
    redis.call('ZADD', results, unpack(members, first, last))
  end
end
