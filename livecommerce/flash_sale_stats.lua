-- One consistent snapshot of a sale's stock and counters. One slot.
-- KEYS: 1 meta, 2 stock, 3 buyers, 4 req, 5 orders, 6 deadlines, 7 counts
-- Returns {state, initial, remaining, reserved, paid, buyers, reserved_orders, paid_orders,
--          cancelled_orders, refunded_kept, restocked} or {} when there is no such sale.
local m = redis.call('HMGET', KEYS[1], 'state', 'stock')
if not m[1] then return {} end
local c = redis.call('HMGET', KEYS[7], 'reserved', 'paid', 'reserved_orders', 'paid_orders',
  'cancelled_orders', 'refunded_kept', 'restocked')
return {m[1], tonumber(m[2]), tonumber(redis.call('GET', KEYS[2])), tonumber(c[1]),
  tonumber(c[2]), redis.call('HLEN', KEYS[3]), tonumber(c[3]), tonumber(c[4]), tonumber(c[5]),
  tonumber(c[6] or '0'), tonumber(c[7] or '0')}
