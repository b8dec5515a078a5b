-- The refund record of one order: hash n -> JSON {n, u, room, q, a, s, d, ts, by, dts}.
-- One key, in the order's {order:ID} slot. ARGV[1] is the step:
--   request n record qty_before: add refund n if every earlier one is done (d == 1), n is
--     the next number and the units already refunded are still qty_before (a CAS)
--     -> {'ok'} | {'pending', n} | {'changed'}
--   decide n state by ts: requested -> approved | rejected
--     -> {'ok'} | {'already'} | {'illegal', state} | {'unknown'}
--   settle n [lifetime_ms]: the worker applied the refund's last step: d = 1 (approved ->
--     refunded); once every refund of the order is done the record expires after
--     lifetime_ms (past the refund window; a new request makes it persistent again)
--     -> {'ok'} | {'unknown'}
--   (request, with KEYS[2] the order's fulfilment record {order:ID}:ship and ARGV[5] the kind,
--     refund | return: the twin of fulfilment.decide_after_sale, judged in the same step
--     that opens the request, so a shipment and a refund cannot both win)
--     -> {'gate', st}: the request is refused for the order's progress st
local step = ARGV[1]
if step == 'request' then
  if KEYS[2] then
    local st = redis.call('HGET', KEYS[2], 'st') or ''
    local kind = ARGV[5] or 'refund'
    if st == 'completed' or (kind == 'refund' and st ~= '') or (kind == 'return' and st ~= 'delivered') then
      return {'gate', st}
    end
  end
  local n, taken, top = tonumber(ARGV[2]), 0, 0
  local all = redis.call('HVALS', KEYS[1])
  for _, raw in ipairs(all) do
    local r = cjson.decode(raw)
    if tonumber(r.d) ~= 1 then return {'pending', r.n} end
    if r.s == 'approved' or r.s == 'refunded' then taken = taken + tonumber(r.q) end
    if tonumber(r.n) > top then top = tonumber(r.n) end
  end
  if n ~= top + 1 or taken ~= tonumber(ARGV[4]) then return {'changed'} end
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  redis.call('PERSIST', KEYS[1])  -- an open refund: kept until it is settled
  return {'ok'}
end
local raw = redis.call('HGET', KEYS[1], ARGV[2])
if not raw then return {'unknown'} end
local r = cjson.decode(raw)
if step == 'decide' then
  if r.s == ARGV[3] then return {'already'} end
  if r.s ~= 'requested' then return {'illegal', r.s} end
  r.s, r.by, r.dts = ARGV[3], ARGV[4], tonumber(ARGV[5])
  redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(r))
  return {'ok'}
end
-- settle
r.d = 1
if r.s == 'approved' then r.s = 'refunded' end
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(r))
if ARGV[3] and tonumber(ARGV[3]) > 0 then
  for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
    if tonumber(cjson.decode(raw).d) ~= 1 then return {'ok'} end
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {'ok'}
