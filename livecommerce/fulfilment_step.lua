-- The fulfilment record of one order: hash {order:ID}:ship with
--   v   the number of the last shipment (a compare-and-set version)
--   s<n> JSON of shipment n (Shipment.data)
--   owe units still to ship after the outbound shipments
--   st  how far the order travelled: '' | shipped | delivered | completed
--   c   when receipt was confirmed; cby who confirmed (buyer | auto)
-- KEYS[1] the record, KEYS[2] the order's refund records ({order:ID}:refunds, same slot).
-- ARGV[1] is the step; every write refreshes the record's lifetime (ARGV[2], ms).
--   ship lifetime n json v owe kind: add shipment n when the record is still at version v
--     (else 'changed'), receipt is not confirmed ('completed'), and, for an outbound
--     shipment, no refund of the order is open ('refund_open': refund-only-before-shipping
--     is decided against the refund gate in one step)
--     -> {'ok', st} | {'changed'} | {'completed'} | {'refund_open', n}
--   deliver lifetime n ts by: shipment n shipped -> delivered; when nothing is owed and
--     every outbound shipment is delivered the order is delivered
--     -> {'ok', st, json} | {'already', st, json} | {'unknown'}
--   confirm lifetime ts by: delivered -> completed once, unless a return is open
--     -> {'ok'} | {'already', by} | {'not_delivered', st} | {'return_open', n}
--   forget lifetime alias: the buyer's data is erased: every parcel's ship_to goes and its
--     user id becomes alias -> {'ok', parcels}
local step, life = ARGV[1], tonumber(ARGV[2])

local function open_refund()
  for _, raw in ipairs(redis.call('HVALS', KEYS[2])) do
    local r = cjson.decode(raw)
    if tonumber(r.d) ~= 1 then return r.n end
  end
  return nil
end

local function touch()
  redis.call('PEXPIRE', KEYS[1], life)
end

local st = redis.call('HGET', KEYS[1], 'st') or ''

if step == 'ship' then
  local n, v = tonumber(ARGV[3]), tonumber(ARGV[5])
  if st == 'completed' then return {'completed'} end
  if tonumber(redis.call('HGET', KEYS[1], 'v') or '0') ~= v then return {'changed'} end
  if ARGV[7] == 'outbound' then
    local open = open_refund()
    if open then return {'refund_open', open} end
  end
  redis.call('HSET', KEYS[1], 's' .. n, ARGV[4], 'v', n)
  if ARGV[7] == 'outbound' then
    redis.call('HSET', KEYS[1], 'owe', tonumber(ARGV[6]))
    if st == '' then st = 'shipped' end
    if st == 'delivered' then st = 'shipped' end  -- cannot happen: nothing is owed once delivered
    redis.call('HSET', KEYS[1], 'st', st)
  end
  touch()
  return {'ok', st}
end

if step == 'deliver' then
  local field = 's' .. ARGV[3]
  local raw = redis.call('HGET', KEYS[1], field)
  if not raw then return {'unknown'} end
  local s = cjson.decode(raw)
  if s.state == 'delivered' then return {'already', st, raw} end
  s.state, s.delivered_ms, s.delivered_by = 'delivered', tonumber(ARGV[4]), ARGV[5]
  raw = cjson.encode(s)
  redis.call('HSET', KEYS[1], field, raw)
  if s.kind == 'outbound' and st == 'shipped' and tonumber(redis.call('HGET', KEYS[1], 'owe') or '0') == 0 then
    local all = true
    local flat = redis.call('HGETALL', KEYS[1])
    for i = 1, #flat, 2 do
      if string.sub(flat[i], 1, 1) == 's' and flat[i] ~= 'st' then
        local o = cjson.decode(flat[i + 1])
        if o.kind == 'outbound' and o.state ~= 'delivered' then all = false end
      end
    end
    if all then
      st = 'delivered'
      redis.call('HSET', KEYS[1], 'st', st)
    end
  end
  touch()
  return {'ok', st, raw}
end

if step == 'forget' then
  local flat, n = redis.call('HGETALL', KEYS[1]), 0
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 1) == 's' and flat[i] ~= 'st' then
      local o = cjson.decode(flat[i + 1])
      o.ship_to, o.user_id = cjson.null, ARGV[3]
      redis.call('HSET', KEYS[1], flat[i], cjson.encode(o))
      n = n + 1
    end
  end
  return {'ok', n}
end

-- confirm
if st == 'completed' then return {'already', redis.call('HGET', KEYS[1], 'cby') or ''} end
if st ~= 'delivered' then return {'not_delivered', st} end
local open = open_refund()
if open then return {'return_open', open} end
redis.call('HSET', KEYS[1], 'st', 'completed', 'c', tonumber(ARGV[3]), 'cby', ARGV[4])
touch()
return {'ok'}
