-- The node hashes of many users in one call: KEYS are lc:{user:U}:nodes, one per user.
-- Each user's keys live in the user's own slot, so this script serves a single Redis only;
-- on a cluster RedisPresence.user_nodes pipelines one HGETALL per user instead.
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGETALL', key)
end
return out
