-- pubsub: how a script publishes on one Redis server. Scripts that publish start with this
-- file or with sharded_pubsub.lua (on a cluster); Store::publishing_script picks which.
-- publish(channel, message) publishes; listeners(channel) is the number of subscribers.
local function publish(channel, message)
  return redis.call('PUBLISH', channel, message)
end
local function listeners(channel)
  return redis.call('PUBSUB', 'NUMSUB', channel)[2]
end
