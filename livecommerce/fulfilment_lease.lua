-- A named lease (the auto-confirm sweep's): granted when free or expired, renewed for its
-- owner (a restarted worker with the same node id), refused to anyone else.
-- KEYS[1] the lease key; ARGV[1] owner, ARGV[2] lease_ms. Returns 1 when the caller holds it.
local owner = redis.call('GET', KEYS[1])
if owner == false or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
