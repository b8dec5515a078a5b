-- Set or change the available units of one SKU: the atomic twin of catalog.decide_stock.
-- One slot: {product:ID}.
-- KEYS: 1 meta, 2 stock, 3 held, 4 sold, 5 stocked, 6 moves
-- ARGV: 1 sku, 2 'set' | 'add', 3 units, 4 the most a SKU may hold, 5 now (ms), 6 reason, 7 by
-- Returns {'ok', available, reserved, sold, stocked, seq, delta}   (seq 0 and delta 0: no change)
--       | {'out_of_range', available, reserved, sold, stocked}   below 0 or above the maximum
--       | {'no_product'} | {'no_sku'}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_product'} end
local sku = ARGV[1]
local a = redis.call('HGET', KEYS[2], sku)
if not a then return {'no_sku'} end
a = tonumber(a)
local r = tonumber(redis.call('HGET', KEYS[3], sku) or '0')
local s = tonumber(redis.call('HGET', KEYS[4], sku) or '0')
local t = tonumber(redis.call('HGET', KEYS[5], sku) or '0')
local n = tonumber(ARGV[3])
local target = n
if ARGV[2] == 'add' then target = a + n end
if target < 0 or target > tonumber(ARGV[4]) then return {'out_of_range', a, r, s, t} end
local delta = target - a
if delta == 0 then return {'ok', a, r, s, t, 0, 0} end
redis.call('HSET', KEYS[2], sku, target)
t = redis.call('HINCRBY', KEYS[5], sku, delta)
local seq = redis.call('HINCRBY', KEYS[6], sku, 1)
redis.call('HSET', KEYS[6], sku .. '/' .. seq, cjson.encode({d = delta, t = tonumber(ARGV[5]), r = ARGV[6], b = ARGV[7]}))
return {'ok', target, r, s, t, seq, delta}
