-- The reminder sweep's lease: one sweeper at a time across workers.
-- KEYS[1] the lease key; ARGV[1] worker, ARGV[2] lease_ms (0: give it up).
-- Granted (and extended) to its holder, or to anyone once it expired; returns 1 when the
-- caller holds the lease now, 0 when another worker does. With lease_ms 0 the holder gives
-- it up (a worker stopping), so another takes over at its next sweep.
local owner = redis.call('GET', KEYS[1])
if tonumber(ARGV[2]) == 0 then
  if owner == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if owner == false or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
