-- Forget settled holds (paid or cancelled before a time) and stock moves SQL has. One slot.
-- KEYS: 1 holds, 2 settled, 3 moves
-- ARGV: 1 settled before (ms), 2 at most this many holds, then move fields (<sku>/<n>) to drop
-- Returns {holds dropped, moves dropped}
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local moves = 0
for i = 3, #ARGV do moves = moves + redis.call('HDEL', KEYS[3], ARGV[i]) end
return {#ids, moves}
