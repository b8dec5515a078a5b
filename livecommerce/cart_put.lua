-- Change one line of a user's cart in a room: the atomic twin of cart.cart_step.
-- One slot: {cart:ROOM/USER}. KEYS: 1 lines (hash "<product>/<sku>" -> qty, '#v' -> version),
-- 2 order (zset line -> when first added)
-- ARGV: 1 mode 'add' | 'set' | 'clear', 2 line field, 3 qty (add: units to add; set: the
--       quantity, 0 removes), 4 max lines, 5 max qty, 6 now (ms), 7 ttl (s)
-- Returns {'ok', version} | {'cart_full'} | {'qty_too_large'}
local mode = ARGV[1]
if mode == 'clear' then
  local v = redis.call('HINCRBY', KEYS[1], '#v', 1)
  local keep = redis.call('HGET', KEYS[1], '#v')
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], '#v', keep)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
  return {'ok', v}
end
local f = ARGV[2]
local cur = tonumber(redis.call('HGET', KEYS[1], f) or '0')
local q = tonumber(ARGV[3])
if mode == 'add' then q = cur + q end
if q > tonumber(ARGV[5]) then return {'qty_too_large'} end
if q <= 0 then
  if cur == 0 then return {'ok', tonumber(redis.call('HGET', KEYS[1], '#v') or '0')} end
  redis.call('HDEL', KEYS[1], f)
  redis.call('ZREM', KEYS[2], f)
else
  if cur == 0 and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return {'cart_full'} end
  if cur == q then return {'ok', tonumber(redis.call('HGET', KEYS[1], '#v') or '0')} end
  redis.call('HSET', KEYS[1], f, q)
  redis.call('ZADD', KEYS[2], 'NX', ARGV[6], f)
end
local v = redis.call('HINCRBY', KEYS[1], '#v', 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
return {'ok', v}
