-- advance: records what a scheduler did for one schedule and moves it to its next fire,
-- unless the schedule changed meanwhile (then the change wins and the next look redoes it).
-- KEYS[1] the tenant's schedules (name -> JSON)
-- KEYS[2] the due set (tenant/name scored by next fire, ms)
-- KEYS[3] the schedule's state hash
-- ARGV[1] the schedule's name; ARGV[2] its JSON as the scheduler read it
-- ARGV[3] fires up to this time (ms) are handled
-- ARGV[4] the next fire (ms), '' for none; ARGV[5] the member in the due set
-- ARGV[6] the latest fire that created a job (ms), '' for none; ARGV[7] that job's id
-- ARGV[8] why a fire enqueued nothing, '' for nothing to report
-- Returns 1 when recorded, 0 when the schedule had changed.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
local after = tonumber(redis.call('HGET', KEYS[3], 'after') or '0')
if tonumber(ARGV[3]) > after then
  redis.call('HSET', KEYS[3], 'after', ARGV[3])
end
if ARGV[6] ~= '' then
  local last = tonumber(redis.call('HGET', KEYS[3], 'last_fire') or '0')
  if tonumber(ARGV[6]) > last then
    redis.call('HSET', KEYS[3], 'last_fire', ARGV[6], 'last_job', ARGV[7])
  end
  redis.call('HDEL', KEYS[3], 'last_error')
end
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[3], 'last_error', ARGV[8])
end
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[2], ARGV[5])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
end
return 1
