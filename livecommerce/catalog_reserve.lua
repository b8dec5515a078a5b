-- Reserve units of one or more SKUs of one product for one hold, all or nothing: the atomic
-- twin of catalog.decide_reserve (with each SKU's per-user limit). One slot: {product:ID}.
-- KEYS: 1 meta, 2 stock, 3 held, 4 off, 5 holds, 6 deadlines, 7 bought
-- ARGV: 1 hold id, 2 user, 3 pay-by (ms), 4 now (ms), 5 the request as canonical JSON (what a
--       retry must repeat), 6 the prices the caller priced the required lines at, JSON
--       {sku: price} ('' or a SKU absent: not checked; the price now is the definition's),
--       7 n, then n lines sku, qty, limit (merged: one per SKU; limit 0 = none), then
--       optional lines sku, qty (gifts: taken while the SKU has the units, else skipped)
-- `bought` counts, per `<user>|<sku>`, the units of the user's holds not released (reserved
-- or paid, less refunded): the limit is checked against it here, so two checkouts of one
-- user cannot pass it together.
-- Returns {'ok', pay_by, the lines taken as JSON [[sku, qty], ...], available after each
--         required line ..., units taken of each optional line ...}
--       | {'dup', state, pay_by, lines taken JSON}  this hold id was reserved before with this request
--       | {'hold_exists'}                 this hold id was used for another request or user
--       | {reject, sku or '', figure}     no_product | archived | no_sku | sku_archived
--                                         | price_changed (figure: the price now)
--                                         | sold_out (figure: available) | limit_reached (figure: bought)
local prev = redis.call('HGET', KEYS[5], ARGV[1])
if prev then
  local h = cjson.decode(prev)
  if (h.r or h.l) == ARGV[5] and h.u == ARGV[2] then return {'dup', h.s, h.p, h.l} end
  return {'hold_exists'}
end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'no_product', '', 0} end
if state == 'archived' then return {'archived', '', 0} end
local priced, prices = nil, {}
if ARGV[6] ~= '' then
  priced = cjson.decode(ARGV[6])
  local def = redis.call('HGET', KEYS[1], 'def')
  if def then
    for _, s in ipairs(cjson.decode(def).skus or {}) do prices[s.id] = tonumber(s.price) end
  else  -- a bare pin-era product: one 'default' SKU at the meta's price
    prices['default'] = tonumber(redis.call('HGET', KEYS[1], 'price') or '')
  end
end
local n = tonumber(ARGV[7])
local user = ARGV[2]
for i = 0, n - 1 do
  local sku, qty, lim = ARGV[8 + 3 * i], tonumber(ARGV[9 + 3 * i]), tonumber(ARGV[10 + 3 * i])
  local a = redis.call('HGET', KEYS[2], sku)
  if not a then return {'no_sku', sku, 0} end
  if redis.call('SISMEMBER', KEYS[4], sku) == 1 then return {'sku_archived', sku, tonumber(a)} end
  if priced and priced[sku] ~= nil and prices[sku] ~= tonumber(priced[sku]) then
    return {'price_changed', sku, prices[sku] or -1}
  end
  if qty > tonumber(a) then return {'sold_out', sku, tonumber(a)} end
  if lim > 0 then
    local b = tonumber(redis.call('HGET', KEYS[7], user .. '|' .. sku) or '0')
    if b + qty > lim then return {'limit_reached', sku, b} end
  end
end
local taken, counted, after, extra = {}, {}, {}, {}
for i = 0, n - 1 do
  local sku, qty = ARGV[8 + 3 * i], tonumber(ARGV[9 + 3 * i])
  table.insert(after, redis.call('HINCRBY', KEYS[2], sku, -qty))
  redis.call('HINCRBY', KEYS[3], sku, qty)
  redis.call('HINCRBY', KEYS[7], user .. '|' .. sku, qty)
  table.insert(taken, {sku, qty})
  table.insert(counted, {sku, qty})
end
for i = 8 + 3 * n, #ARGV - 1, 2 do
  local sku, qty = ARGV[i], tonumber(ARGV[i + 1])
  local a = redis.call('HGET', KEYS[2], sku)
  if a and qty <= tonumber(a) and redis.call('SISMEMBER', KEYS[4], sku) == 0 then
    redis.call('HINCRBY', KEYS[2], sku, -qty)
    redis.call('HINCRBY', KEYS[3], sku, qty)
    table.insert(taken, {sku, qty})
    table.insert(extra, qty)
  else
    table.insert(extra, 0)
  end
end
if #taken == 0 then  -- only optional lines, none in stock: no hold
  local out = {'ok', ARGV[3], '[]'}
  for _, q in ipairs(extra) do table.insert(out, q) end
  return out
end
local lines = cjson.encode(taken)
local c = '[]'
if #counted > 0 then c = cjson.encode(counted) end
redis.call('HSET', KEYS[5], ARGV[1], cjson.encode({u = user, l = lines, r = ARGV[5], c = c, s = 'reserved', p = ARGV[3], t = ARGV[4]}))
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[1])
local out = {'ok', ARGV[3], lines}
for _, a in ipairs(after) do table.insert(out, a) end
for _, q in ipairs(extra) do table.insert(out, q) end
return out
