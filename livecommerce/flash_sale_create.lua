-- Create one sale. One slot: {sale:ID}.
-- KEYS: 1 meta, 2 stock, 3 buyers, 4 req, 5 orders, 6 deadlines, 7 counts
-- ARGV: 1 definition (canonical JSON), 2 id, 3 room, 4 product_id, 5 price, 6 stock,
--       7 per_user_limit, 8 starts_ms, 9 ends_ms, 10 payment_window_s, 11 restock_on_refund
-- Returns 1 created, 0 the same definition exists already, -1 another definition has this id.
local def = redis.call('HGET', KEYS[1], 'def')
if def then
  if def == ARGV[1] then return 0 end
  return -1
end
redis.call('HSET', KEYS[1],
  'def', ARGV[1], 'id', ARGV[2], 'room', ARGV[3], 'product_id', ARGV[4], 'price', ARGV[5],
  'stock', ARGV[6], 'per_user_limit', ARGV[7], 'starts_ms', ARGV[8], 'ends_ms', ARGV[9],
  'payment_window_s', ARGV[10], 'restock_on_refund', ARGV[11], 'state', 'scheduled')
redis.call('SET', KEYS[2], ARGV[6])
redis.call('HSET', KEYS[7], 'reserved', 0, 'paid', 0,
  'reserved_orders', 0, 'paid_orders', 0, 'cancelled_orders', 0)
return 1
