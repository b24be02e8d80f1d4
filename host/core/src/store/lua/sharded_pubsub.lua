-- sharded_pubsub: how a script publishes on a Redis Cluster: on sharded channels, carried
-- only by the node of the channel's slot (a plain PUBLISH goes to every node). A channel a
-- script publishes on must share the slot of the script's keys. Same functions as
-- pubsub.lua.
local function publish(channel, message)
  return redis.call('SPUBLISH', channel, message)
end
local function listeners(channel)
  return redis.call('PUBSUB', 'SHARDNUMSUB', channel)[2]
end
