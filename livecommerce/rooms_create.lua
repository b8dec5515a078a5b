-- Create a room's meta hash unless the room exists (one slot: {room:ID}).
-- KEYS[1] meta hash; ARGV field, value pairs (must include state)
-- Returns 1 when created, 0 when the room already existed.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
