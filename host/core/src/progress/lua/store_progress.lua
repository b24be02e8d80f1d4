-- store_progress: stores a running job's latest progress report. Only while the job runs: its
-- outcome stores the last report itself, and a report arriving after that must not overwrite it.
-- KEYS[1] the job hash
-- ARGV[1] the report (JSON)
-- Returns nothing.
if redis.call('HGET', KEYS[1], 'status') == 'running' then
  redis.call('HSET', KEYS[1], 'progress', ARGV[1])
end
