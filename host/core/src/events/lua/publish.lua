-- publish: adds an event to its channel's replay stream (capped, expiring) and publishes it
-- live under the stream entry's id.
-- KEYS[1] the channel's replay stream, whose name is also the pub/sub channel
-- ARGV[1] the stream's length (trimmed approximately)
-- ARGV[2] the stream's lifetime in seconds, renewed by every event
-- ARGV[3] the event name
-- ARGV[4] its data
-- Returns the event's id (the stream entry's). The published message is the id, the name and
-- the data separated by newlines. Uses store/lua/pubsub.lua (publish).
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[3], 'data', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2])
publish(KEYS[1], id .. '\n' .. ARGV[3] .. '\n' .. ARGV[4])
return id
