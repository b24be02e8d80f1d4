-- dead_letter (prepended to the scripts that kill jobs): appends job `id` to the dead-letter
-- stream `dead`, which keeps about the latest 100,000, and returns the entry's id for the
-- job's `dead_entry`. `tries` is the attempts made, `now` the time of death.
local function append_dead_letter(dead, id, task, error, kind, tries, now)
  return redis.call('XADD', dead, 'MAXLEN', '~', 100000, '*', 'id', id, 'task', task,
    'error', error, 'error_kind', kind, 'tries', tries, 'failed_at', now)
end
