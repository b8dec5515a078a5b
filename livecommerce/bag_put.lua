-- Store a room's product list with a compare-and-set on its version. One slot: {room:ID}.
-- KEYS: 1 the list (hash: v, json)
-- ARGV: 1 expected version (0: no list yet), 2 the new list as JSON (its v is expected + 1)
-- Returns {1} stored | {0, current version, current JSON or ''}: another change came first.
local cur = redis.call('HMGET', KEYS[1], 'v', 'json')
local v = tonumber(cur[1] or '0')
if v ~= tonumber(ARGV[1]) then return {0, v, cur[2] or ''} end
redis.call('HSET', KEYS[1], 'v', v + 1, 'json', ARGV[2])
return {1}
