-- drop_results: drops the input, result and log of finished jobs past the result retention;
-- the rest of their records stays for the history retention.
-- KEYS[1] the partition's mark of how far along its finished jobs results were dropped
-- KEYS[2..] the jobs' keys, in ARGV's order from ARGV[3]
-- ARGV[1] drop those that finished at or before this (ms since the Unix epoch)
-- ARGV[2] the mark to set: the finish time the jobs given reach up to
-- ARGV[3..] the jobs' ids (the caller read them from the set of finished jobs)
-- Returns how many jobs lost their results (a job that lost them before is not counted). A
-- job not finished (retried from the dead letters since) or finished after ARGV[1] (retried
-- and finished again) is left alone.
local dropped = 0
for i = 3, #ARGV do
  local key = KEYS[i - 1]
  local job = redis.call('HMGET', key, 'status', 'finished_at')
  local finished = job[1] == 'completed' or job[1] == 'cancelled' or job[1] == 'dead'
  if finished and tonumber(job[2] or 0) <= tonumber(ARGV[1]) then
    if redis.call('HDEL', key, 'input', 'result', 'log') > 0 then
      dropped = dropped + 1
    end
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return dropped
