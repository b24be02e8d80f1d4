-- enqueue: creates a batch of one tenant's jobs in one partition, each queued now or
-- scheduled for later. One call per batch reads the clock once.
-- KEYS[1], KEYS[2], KEYS[3] the partition's high, normal and low streams
-- KEYS[4] the partition's delayed set
-- KEYS[5] the index of the tenant's jobs in the partition
-- KEYS[6] the partition's counts of jobs per state
-- KEYS[7] the partition's index of job ids (for lookups by id prefix)
-- KEYS[8..] per job, two keys: its hash and its idempotency key (its hash again when it has
-- none)
-- ARGV[1] the lifetime of idempotency keys, in seconds; ARGV[2] the tenant
-- ARGV[3..] per job: its id; its stream's index (1 = high); run at, in ms since the epoch
-- ('0' = none); run this many ms after now, when run at is '0' ('0' runs now); the
-- idempotency key's value ('' = none); the count n of the values that follow; n values,
-- field, value pairs of the job hash
-- Returns per job, in order, {job id, 1} for a new job, or {existing job id, 0} when its
-- idempotency key was used before.
-- Uses lib/clock.lua and lib/history.lua.
local now = tonumber(now_ms())
local moves = changes(now)
local replies = {}
local arg = 3
local key = 8
local ids = {}
while arg <= #ARGV do
  local id, stream, run_at, delay, idempotency = ARGV[arg], tonumber(ARGV[arg + 1]),
    tonumber(ARGV[arg + 2]), tonumber(ARGV[arg + 3]), ARGV[arg + 4]
  local count = tonumber(ARGV[arg + 5])
  local first = arg + 6
  local job = KEYS[key]
  arg = first + count
  if idempotency ~= '' and not redis.call('SET', KEYS[key + 1], id, 'NX', 'EX', ARGV[1]) then
    replies[#replies + 1] = {redis.call('GET', KEYS[key + 1]), 0}
  else
    if run_at == 0 then
      run_at = now + delay
    end
    -- One HSET writes the whole hash, status and due time included.
    local scheduled = run_at > now
    if not scheduled then
      run_at = now
    end
    redis.call('HSET', job, 'created_at', now, 'attempt', 0,
      'status', scheduled and 'scheduled' or 'pending', 'run_at', run_at,
      unpack(ARGV, first, arg - 1))
    redis.call('ZADD', KEYS[5], now, id)
    ids[#ids + 1] = 0
    ids[#ids + 1] = id
    count_move(moves, ARGV[2], nil, scheduled and 'scheduled' or 'pending')
    if scheduled then
      redis.call('ZADD', KEYS[4], run_at, id)
    else
      redis.call('XADD', KEYS[stream], '*', 'id', id)
    end
    replies[#replies + 1] = {id, 1}
  end
  key = key + 2
end
write_changes(moves, KEYS[6])
-- In pieces of 500 ids (score and id each): unpack has a limit.
for first = 1, #ids, 1000 do
  redis.call('ZADD', KEYS[7], unpack(ids, first, math.min(first + 999, #ids)))
end
return replies
