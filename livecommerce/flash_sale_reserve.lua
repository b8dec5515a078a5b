-- Reserve units of one sale: the atomic twin of flash_sale.decide_reserve. One slot.
-- KEYS: 1 meta, 2 stock, 3 buyers, 4 req, 5 orders, 6 deadlines, 7 counts
-- ARGV: 1 user, 2 qty, 3 request key (user-scoped request_id), 4 now (ms), 5 order id,
--       6 request_id as sent
-- Returns
--   {'ok',  order_id, qty, pay_by, remaining, bought, price, last_unit}
--   {'dup', order_id, qty, pay_by, remaining, bought, price, 0}   request seen before
--   {reject, remaining, bought}  reject: not_started | ended | sold_out | limit_reached
--                                | room_ended (the room's end closed the sale: closed_by)
--   {'no_sale'} | {'order_exists'}
local user, qty, rkey, now, oid = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5]
local m = redis.call('HMGET', KEYS[1], 'state', 'starts_ms', 'ends_ms', 'per_user_limit',
  'payment_window_s', 'price', 'closed_by')
if not m[1] then return {'no_sale'} end
local stock = tonumber(redis.call('GET', KEYS[2]))
local bought = tonumber(redis.call('HGET', KEYS[3], user) or '0')

-- a retry answers with the first order, whatever happened since
local prev = redis.call('HGET', KEYS[4], rkey)
if prev then
  local o = cjson.decode(redis.call('HGET', KEYS[5], prev))
  return {'dup', prev, o.q, o.p, stock, bought, m[6], 0}
end

-- time and state first, then stock, then the user's limit (as decide_reserve)
local state = m[1]
if state == 'ended' and m[7] and string.sub(m[7], 1, 5) == 'room:' then return {'room_ended', stock, bought} end
if state == 'scheduled' or now < tonumber(m[2]) then return {'not_started', stock, bought} end
if state == 'ended' or now >= tonumber(m[3]) then return {'ended', stock, bought} end
if qty > stock then return {'sold_out', stock, bought} end
if bought + qty > tonumber(m[4]) then return {'limit_reached', stock, bought} end
if redis.call('HEXISTS', KEYS[5], oid) == 1 then return {'order_exists'} end

local pay_by = string.format('%d', now + tonumber(m[5]) * 1000)
stock = redis.call('DECRBY', KEYS[2], qty)
bought = redis.call('HINCRBY', KEYS[3], user, qty)
redis.call('HSET', KEYS[4], rkey, oid)
redis.call('HSET', KEYS[5], oid, cjson.encode({u = user, q = qty, s = 'reserved', p = pay_by, r = ARGV[6]}))
redis.call('ZADD', KEYS[6], pay_by, oid)
redis.call('HINCRBY', KEYS[7], 'reserved', qty)
redis.call('HINCRBY', KEYS[7], 'reserved_orders', 1)
local last = 0
if stock == 0 then
  redis.call('HSET', KEYS[1], 'state', 'sold_out')  -- live --sell_out--> sold_out
  last = 1
end
return {'ok', oid, qty, pay_by, stock, bought, m[6], last}
