-- The reminder sweep's lease: one sweeper at a time across workers.
-- KEYS[1] the lease key; ARGV[1] worker, ARGV[2] lease_ms.
-- Granted (and extended) to its holder, or to anyone once it expired; returns 1 when the
-- caller holds the lease now, 0 when another worker does.
local owner = redis.call('GET', KEYS[1])
if owner == false or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
