-- One gateway's per-second contribution to a live show's statistics (one slot: {room:ID}).
-- KEYS[1] meta hash; ARGV[1] online now (all nodes), ARGV[2] comments since the last tick
-- Returns 1 when the room is live (counted), 0 otherwise (nothing written).
if redis.call('HGET', KEYS[1], 'state') ~= 'live' then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('HINCRBY', KEYS[1], 'comments', ARGV[2]) end
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[1], 'peak_online') or '0') then
  redis.call('HSET', KEYS[1], 'peak_online', ARGV[1])
end
return 1
