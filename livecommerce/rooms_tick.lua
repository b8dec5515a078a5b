-- One gateway's per-second contribution to a live show's statistics (one slot: {room:ID}).
-- KEYS[1] meta hash; ARGV[1] online now (all nodes), ARGV[2] comments since the last tick,
-- ARGV[3] '1' when ARGV[1] is a sample of the room's online count (the node holds the room):
-- added to online_sum / online_samples, whose quotient is the show's average online (every
-- node samples the same total, so more nodes sampling changes no average)
-- Returns 1 when the room is live (counted), 0 otherwise (nothing written).
if redis.call('HGET', KEYS[1], 'state') ~= 'live' then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('HINCRBY', KEYS[1], 'comments', ARGV[2]) end
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[1], 'peak_online') or '0') then
  redis.call('HSET', KEYS[1], 'peak_online', ARGV[1])
end
if ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[1], 'online_sum', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'online_samples', 1)
end
return 1
