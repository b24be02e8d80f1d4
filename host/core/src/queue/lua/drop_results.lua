-- drop_results: drops the input, result and log of finished jobs past the result retention;
-- the rest of their records stays for the history retention.
-- KEYS[1] the partition's set of finished jobs with their results
-- KEYS[2..] the jobs' keys, in ARGV's order from ARGV[2]
-- ARGV[1] drop those that finished at or before this (ms since the Unix epoch)
-- ARGV[2..] the jobs' ids (the caller read them from the set)
-- Returns how many jobs lost their results. An id no longer in the set (its job was retried
-- from the dead letters since, or deleted) is left alone.
local dropped = 0
for i = 2, #ARGV do
  local finished = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if finished and tonumber(finished) <= tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[i], 'input', 'result', 'log')
    dropped = dropped + 1
  end
end
return dropped
