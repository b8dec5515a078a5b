-- One more unread notification for each user of a fan-out page, in one call.
-- KEYS: lc:{user:U}:unread, one per user (each in the user's own slot, so this script serves
-- a single Redis only; on a cluster RedisReach.add_unread pipelines INCR + EXPIRE instead).
-- ARGV[1] lifetime (s). Returns the number of counters raised.
for _, key in ipairs(KEYS) do
  redis.call('INCR', key)
  redis.call('EXPIRE', key, ARGV[1])
end
return #KEYS
