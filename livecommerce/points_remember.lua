-- The points worker's cache of many users in one call: KEYS are lc:{user:U}:points, ARGV is
-- the lifetime in seconds, then for each key its field count n and n field/value pairs.
-- Each user's key lives in the user's own slot, so this script serves a single Redis only;
-- on a cluster PointsRedis.remember pipelines HSET + EXPIRE per user instead.
local ttl = tonumber(ARGV[1])
local at = 2
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[at])
  redis.call('HSET', key, unpack(ARGV, at + 1, at + 2 * n))
  redis.call('EXPIRE', key, ttl)
  at = at + 1 + 2 * n
end
return #KEYS
