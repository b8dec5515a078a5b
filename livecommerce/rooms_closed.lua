-- Record what ending a show closed, once per show (one slot: {room:ID}).
-- KEYS[1] meta hash
-- ARGV[1] the show's ended_ms, ARGV[2] the closed items (JSON)
-- Returns {1, closed} when this call stored it, {0, closed} when it was stored before (the
-- answer every repeated end gives), {0, ''} when the room is no longer that ended show.
local m = redis.call('HMGET', KEYS[1], 'state', 'ended_ms', 'closed')
if m[1] ~= 'ended' or m[2] ~= ARGV[1] then return {0, ''} end
if m[3] and m[3] ~= '' then return {0, m[3]} end
redis.call('HSET', KEYS[1], 'closed', ARGV[2])
return {1, ARGV[2]}
