-- A node's batch of connection changes for many users in one call: KEYS are
-- lc:{user:U}:nodes (one per user), ARGV = node, ttl_s, then one delta per key.
-- Each user's key lives in the user's own slot, so this script serves a single Redis only;
-- on a cluster RedisPresence.users_connected pipelines HINCRBY/EXPIRE per user instead.
local node, ttl = ARGV[1], tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  if redis.call('HINCRBY', key, node, ARGV[i + 2]) <= 0 then
    redis.call('HDEL', key, node)  -- no connection left here (or a close whose open was lost)
  end
  redis.call('EXPIRE', key, ttl)
end
return #KEYS
