-- history (prepended to the scripts that change a job's state): the per-state counts of a
-- partition and the record of its finished jobs.
-- count_move(states, tenant, from, to) counts one of `tenant`'s jobs out of state `from` and into
-- state `to` in the partition's hash of counts `states`; either may be nil (a job created or
-- deleted). A dashboard reads these counts; it never scans jobs for them.
local function count_move(states, tenant, from, to)
  if from then
    redis.call('HINCRBY', states, tenant .. ':' .. from, -1)
  end
  if to then
    redis.call('HINCRBY', states, tenant .. ':' .. to, 1)
  end
end
-- finished_job(key, finished, results, id, now, ttl) keeps the record of job `id` (hash
-- `key`), which finished at `now`: in the partition's sets of finished jobs (`finished`, kept
-- for the history retention and trimmed to its cap) and of jobs with their results
-- (`results`, whose input, result and log go after the result retention). `ttl` (seconds,
-- past the history retention) only bounds a record nobody trims: the trimming of the sets
-- is what drops it, and keeps the counts and the listing right.
local function finished_job(key, finished, results, id, now, ttl)
  redis.call('EXPIRE', key, ttl)
  redis.call('ZADD', finished, now, id)
  redis.call('ZADD', results, now, id)
end
