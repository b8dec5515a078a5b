-- Take the announcer lease of a drawn lottery: granted to the lease owner itself (a
-- restarted worker with the same name) or to anyone once the lease has expired.
-- KEYS[1] meta hash; ARGV[1] worker, ARGV[2] now_ms, ARGV[3] lease_ms
-- Returns 1 when the caller now holds the lease, 0 otherwise (not drawn, or leased).
if redis.call('HGET', KEYS[1], 'state') ~= 'drawn' then return 0 end
local owner = redis.call('HGET', KEYS[1], 'lease_owner')
local lease_until = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
if owner == ARGV[1] or lease_until <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'lease_owner', ARGV[1], 'lease_until', tonumber(ARGV[2]) + tonumber(ARGV[3]))
  return 1
end
return 0
