-- Mark a reserved order paid: its units move from reserved to paid exactly once. One slot.
-- KEYS: 1 meta, 2 stock, 3 buyers, 4 req, 5 orders, 6 deadlines, 7 counts
-- ARGV: 1 order id, 2 now (ms) or '' to skip the deadline check
-- Returns {'paid', qty, user} | {'already_paid', qty, user} | {'already_cancelled', qty, user}
--       | {'expired', qty, user} | {'unknown'}
local raw = redis.call('HGET', KEYS[5], ARGV[1])
if not raw then return {'unknown'} end
local o = cjson.decode(raw)
if o.s == 'paid' then return {'already_paid', o.q, o.u} end
if o.s == 'cancelled' then return {'already_cancelled', o.q, o.u} end
if ARGV[2] ~= '' and tonumber(ARGV[2]) >= tonumber(o.p) then return {'expired', o.q, o.u} end
o.s = 'paid'
redis.call('HSET', KEYS[5], ARGV[1], cjson.encode(o))
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('HINCRBY', KEYS[7], 'reserved', -o.q)
redis.call('HINCRBY', KEYS[7], 'reserved_orders', -1)
redis.call('HINCRBY', KEYS[7], 'paid', o.q)
redis.call('HINCRBY', KEYS[7], 'paid_orders', 1)
return {'paid', o.q, o.u}
