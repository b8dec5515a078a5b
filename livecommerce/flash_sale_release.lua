-- Release a reserved order (buyer cancel or payment time-out): its units go back to stock
-- exactly once. One slot.
-- KEYS: 1 meta, 2 stock, 3 buyers, 4 req, 5 orders, 6 deadlines, 7 counts
-- ARGV: 1 order id
-- Returns {'released', remaining, qty, user} | {'already_released', remaining, qty, user}
--       | {'already_paid', remaining, qty, user} | {'unknown'}
local raw = redis.call('HGET', KEYS[5], ARGV[1])
if not raw then return {'unknown'} end
local o = cjson.decode(raw)
if o.s == 'cancelled' then return {'already_released', tonumber(redis.call('GET', KEYS[2])), o.q, o.u} end
if o.s == 'paid' then return {'already_paid', tonumber(redis.call('GET', KEYS[2])), o.q, o.u} end
o.s = 'cancelled'
redis.call('HSET', KEYS[5], ARGV[1], cjson.encode(o))
local stock = redis.call('INCRBY', KEYS[2], o.q)
if redis.call('HINCRBY', KEYS[3], o.u, -o.q) <= 0 then redis.call('HDEL', KEYS[3], o.u) end
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('HINCRBY', KEYS[7], 'reserved', -o.q)
redis.call('HINCRBY', KEYS[7], 'reserved_orders', -1)
redis.call('HINCRBY', KEYS[7], 'cancelled_orders', 1)
if redis.call('HGET', KEYS[1], 'state') == 'sold_out' then
  redis.call('HSET', KEYS[1], 'state', 'live')  -- sold_out --restock--> live
end
return {'released', stock, o.q, o.u}
