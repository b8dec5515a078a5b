-- Reserve for a batch of buys of one sale, in arrival order: the atomic twin of
-- flash_sale.decide_reserve_batch (each buy decided as flash_sale_reserve.lua would decide it
-- alone, right after the ones before it). One slot.
-- KEYS: 1 meta, 2 stock, 3 buyers, 4 req, 5 orders, 6 deadlines, 7 counts
-- ARGV: 1 room ended ('1': the node's gate says the room's show ended: every buy that is not
--       a repeated request answers room_ended), 2 want buyers ('1': return the sale's buyers
--       when it has no stock left after the batch), then 6 per buy: user, qty, request key
--       (user-scoped request_id), now (ms), order id, request_id as sent
-- Returns {'no_sale'}, or
--   {'ok', stock, price, state, buyers, then 6 per buy: code, order_id, qty, pay_by, stock, bought}
--   buyers: the users holding units (when asked and stock is 0), else an empty list
--   code: ok | dup (order_id, qty, pay_by: the first order's) | order_exists | not_started
--         | ended | sold_out | limit_reached | room_ended (order_id '', qty and pay_by 0);
--   stock and bought: the sale's units and the user's held units right after that buy
local m = redis.call('HMGET', KEYS[1], 'state', 'starts_ms', 'ends_ms', 'per_user_limit',
  'payment_window_s', 'price', 'closed_by')
if not m[1] then return {'no_sale'} end
local state = m[1]
local starts, ends, limit = tonumber(m[2]), tonumber(m[3]), tonumber(m[4])
local window = tonumber(m[5]) * 1000
local room_closed = state == 'ended' and m[7] and string.sub(m[7], 1, 5) == 'room:'
local gate = ARGV[1] == '1'
local stock = tonumber(redis.call('GET', KEYS[2]))
local out = {'ok', 0, m[6], '', {}}
local held = {}
local units, orders = 0, 0
local n = 5
for i = 3, #ARGV, 6 do
  local user, qty, rkey, now, oid = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4]
  local bought = held[user]
  if not bought then bought = tonumber(redis.call('HGET', KEYS[3], user) or '0') end
  local code, id, q, pay_by = nil, '', 0, 0
  -- a retry answers with the first order, whatever happened since (an earlier buy of this batch too)
  local prev = redis.call('HGET', KEYS[4], rkey)
  if prev then
    local o = cjson.decode(redis.call('HGET', KEYS[5], prev))
    code, id, q, pay_by = 'dup', prev, o.q, o.p
  elseif gate then code = 'room_ended'
  -- time and state first, then stock, then the user's limit (as decide_reserve)
  elseif room_closed then code = 'room_ended'
  elseif state == 'scheduled' or now < starts then code = 'not_started'
  elseif state == 'ended' or now >= ends then code = 'ended'
  elseif qty > stock then code = 'sold_out'
  elseif bought + qty > limit then code = 'limit_reached'
  elseif redis.call('HEXISTS', KEYS[5], oid) == 1 then code = 'order_exists'
  else
    pay_by = string.format('%d', now + window)
    stock = stock - qty
    bought = bought + qty
    redis.call('HSET', KEYS[3], user, bought)
    redis.call('HSET', KEYS[4], rkey, oid)
    redis.call('HSET', KEYS[5], oid, cjson.encode({u = user, q = qty, s = 'reserved', p = pay_by, r = ARGV[i + 5]}))
    redis.call('ZADD', KEYS[6], pay_by, oid)
    units, orders = units + qty, orders + 1
    if stock == 0 then state = 'sold_out' end  -- live --sell_out--> sold_out
    code, id, q = 'ok', oid, qty
  end
  held[user] = bought
  out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5], out[n + 6] = code, id, q, pay_by, stock, bought
  n = n + 6
end
if orders > 0 then
  redis.call('DECRBY', KEYS[2], units)
  redis.call('HINCRBY', KEYS[7], 'reserved', units)
  redis.call('HINCRBY', KEYS[7], 'reserved_orders', orders)
  if stock == 0 then redis.call('HSET', KEYS[1], 'state', 'sold_out') end
end
out[2], out[4] = stock, state
if ARGV[2] == '1' and stock == 0 then out[5] = redis.call('HKEYS', KEYS[3]) end
return out
