-- Put refunded units of a paid hold back on sale, exactly once per refund. One slot: {product:ID}.
-- KEYS: 1 stock, 2 sold, 3 holds, 4 bought
-- ARGV: 1 hold id, 2 refund id, then sku, qty pairs (units refunded of each SKU)
-- Units move from sold to stock (stocked unchanged); the user's counted units of a SKU drop by
-- the refunded units they counted.
-- Returns {'ok'} | {'already'} (this refund was applied) | {'unknown'} | {'not_paid'}
--       | {'too_many', sku, units left}
local raw = redis.call('HGET', KEYS[3], ARGV[1])
if not raw then return {'unknown'} end
local h = cjson.decode(raw)
if h.s ~= 'paid' then return {'not_paid'} end
h.rf = h.rf or {}
h.rq = h.rq or {}
if h.rf[ARGV[2]] then return {'already'} end
local have, cnt = {}, {}
for _, line in ipairs(cjson.decode(h.l)) do have[line[1]] = (have[line[1]] or 0) + tonumber(line[2]) end
for _, line in ipairs(cjson.decode(h.c or '[]')) do cnt[line[1]] = (cnt[line[1]] or 0) + tonumber(line[2]) end
for i = 3, #ARGV - 1, 2 do
  local sku, qty = ARGV[i], tonumber(ARGV[i + 1])
  local left = (have[sku] or 0) - (h.rq[sku] or 0)
  if qty > left then return {'too_many', sku, left} end
end
for i = 3, #ARGV - 1, 2 do
  local sku, qty = ARGV[i], tonumber(ARGV[i + 1])
  local before = h.rq[sku] or 0
  redis.call('HINCRBY', KEYS[2], sku, -qty)
  redis.call('HINCRBY', KEYS[1], sku, qty)
  local uncount = math.min(qty, math.max(0, (cnt[sku] or 0) - before))
  if uncount > 0 then
    local f = h.u .. '|' .. sku
    if tonumber(redis.call('HINCRBY', KEYS[4], f, -uncount)) <= 0 then redis.call('HDEL', KEYS[4], f) end
  end
  h.rq[sku] = before + qty
end
h.rf[ARGV[2]] = 1
redis.call('HSET', KEYS[3], ARGV[1], cjson.encode(h))
return {'ok'}
