-- The points worker's cache of many users in one call: KEYS are lc:{user:U}:points, ARGV[1]
-- the lifetime in seconds, then one "viewer:host:level:host_level" per key.
-- Each user's key lives in the user's own slot, so this script serves a single Redis only;
-- on a cluster PointsRedis.remember pipelines HSET + EXPIRE per user instead.
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local v, h, l, hl = string.match(ARGV[i + 1], '^(-?%d+):(-?%d+):(-?%d+):(-?%d+)$')
  redis.call('HSET', key, 'viewer', v, 'host', h, 'level', l, 'host_level', hl)
  redis.call('EXPIRE', key, ttl)
end
return #KEYS
