-- Reserve units of one or more SKUs of one product for one hold, all or nothing: the atomic
-- twin of catalog.decide_reserve. One slot: {product:ID}.
-- KEYS: 1 meta, 2 stock, 3 held, 4 off, 5 holds, 6 deadlines
-- ARGV: 1 hold id, 2 user, 3 pay-by (ms), 4 now (ms), 5 the lines as canonical JSON
--       [[sku, qty], ...] (merged: one line per SKU), then sku, qty, sku, qty ...
-- Returns {'ok', pay_by, available of each line's SKU after ...}
--       | {'dup', state, pay_by}          this hold id was reserved before with these lines
--       | {'hold_exists'}                 this hold id was used for other lines or another user
--       | {reject, sku or '', available}  no_product | archived | no_sku | sku_archived | sold_out
local prev = redis.call('HGET', KEYS[5], ARGV[1])
if prev then
  local h = cjson.decode(prev)
  if h.l == ARGV[5] and h.u == ARGV[2] then return {'dup', h.s, h.p} end
  return {'hold_exists'}
end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'no_product', '', 0} end
if state == 'archived' then return {'archived', '', 0} end
local n = (#ARGV - 5) / 2
for i = 0, n - 1 do
  local sku, qty = ARGV[6 + 2 * i], tonumber(ARGV[7 + 2 * i])
  local a = redis.call('HGET', KEYS[2], sku)
  if not a then return {'no_sku', sku, 0} end
  if redis.call('SISMEMBER', KEYS[4], sku) == 1 then return {'sku_archived', sku, tonumber(a)} end
  if qty > tonumber(a) then return {'sold_out', sku, tonumber(a)} end
end
local out = {'ok', ARGV[3]}
for i = 0, n - 1 do
  local sku, qty = ARGV[6 + 2 * i], tonumber(ARGV[7 + 2 * i])
  table.insert(out, redis.call('HINCRBY', KEYS[2], sku, -qty))
  redis.call('HINCRBY', KEYS[3], sku, qty)
end
redis.call('HSET', KEYS[5], ARGV[1], cjson.encode({u = ARGV[2], l = ARGV[5], s = 'reserved', p = ARGV[3], t = ARGV[4]}))
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[1])
return out
