-- Settle a refund of paid units of one order, exactly once per refund id. One slot.
-- KEYS: 1 meta, 2 stock, 3 buyers, 4 req, 5 orders, 6 deadlines, 7 counts, 8 refunds
--   (refunds: hash refund id -> "qty|restocked", the idempotency record)
-- ARGV: 1 order id, 2 refund id, 3 qty
-- With the sale's restock_on_refund the units go back to stock (a sold_out sale is live
-- again: sold_out --restock--> live); else they are counted as refunded_kept. Either way
-- they leave counts.paid and the buyer's held units, so the per-user limit counts units
-- held and not refunded, and at every moment
--   meta.stock == stock + counts.reserved + counts.paid + counts.refunded_kept
-- The hold keeps state 'paid' with rq (units refunded so far).
-- Returns {'ok', restocked, remaining} | {'already', restocked, remaining}
--       | {'not_paid'} | {'too_many', left} | {'unknown'} | {'no_sale'} (its keys expired)
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_sale'} end  -- settled and expired
local prev = redis.call('HGET', KEYS[8], ARGV[2])
if prev then
  local restocked = tonumber(string.match(prev, '|(%d+)$'))
  return {'already', restocked, tonumber(redis.call('GET', KEYS[2]))}
end
local raw = redis.call('HGET', KEYS[5], ARGV[1])
if not raw then return {'unknown'} end
local o = cjson.decode(raw)
if o.s ~= 'paid' then return {'not_paid'} end
local qty = tonumber(ARGV[3])
local rq = tonumber(o.rq or 0)
if rq + qty > tonumber(o.q) then return {'too_many', tonumber(o.q) - rq} end
o.rq = rq + qty
redis.call('HSET', KEYS[5], ARGV[1], cjson.encode(o))
redis.call('HINCRBY', KEYS[7], 'paid', -qty)
local restocked = 0
local remaining
if redis.call('HGET', KEYS[1], 'restock_on_refund') == '1' then
  restocked = 1
  remaining = redis.call('INCRBY', KEYS[2], qty)
  redis.call('HINCRBY', KEYS[7], 'restocked', qty)
  if redis.call('HGET', KEYS[1], 'state') == 'sold_out' then
    redis.call('HSET', KEYS[1], 'state', 'live')
  end
else
  remaining = tonumber(redis.call('GET', KEYS[2]))
  redis.call('HINCRBY', KEYS[7], 'refunded_kept', qty)
end
if redis.call('HINCRBY', KEYS[3], o.u, -qty) <= 0 then redis.call('HDEL', KEYS[3], o.u) end
redis.call('HSET', KEYS[8], ARGV[2], qty .. '|' .. restocked)
-- a settled sale's keys expire (flash_sale_settle.lua): the record goes with them
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[8], ttl) end
return {'ok', restocked, remaining}
