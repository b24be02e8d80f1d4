-- dead_letter (prepended to the scripts that kill jobs): appends job `id` to the dead-letter
-- stream `dead`, which keeps about the latest 100,000, and to the partition's index of dead
-- jobs `index` (as `tenant:id`, scored by its creation, `created_at`, so a listing of dead
-- jobs reads it as it reads a tenant's jobs), and returns the stream entry's id for the
-- job's `dead_entry`. `tries` is the attempts made, `now` the time of death.
local function append_dead_letter(dead, index, tenant, created_at, id, task, error, kind, tries,
    now)
  redis.call('ZADD', index, created_at, tenant .. ':' .. id)
  return redis.call('XADD', dead, 'MAXLEN', '~', 100000, '*', 'id', id, 'task', task,
    'error', error, 'error_kind', kind, 'tries', tries, 'failed_at', now)
end
