-- One step of a claimed coupon's life-cycle for an order (livecommerce.coupons
-- COUPON_TRANSITIONS). All keys in the drop's {coupon:ID} slot.
-- KEYS[1] meta hash, KEYS[2] owners hash (user -> coupon JSON)
-- ARGV[1] step: lock | consume | restore, ARGV[2] user, ARGV[3] order id,
-- ARGV[4] order amount (cents, lock), ARGV[5] now_ms
-- Returns {code, discount}:
--   lock:    'ok' (also when this order holds it already), 'not_found', 'not_owned',
--            'in_use' (locked or used by another order), 'expired', 'below_threshold'
--   consume: 'ok', 'already' (used by this order before), 'not_locked'
--   restore: 'ok', 'used' (used by this order: stays used), 'noop' (not held by this order)
local m = redis.call('HMGET', KEYS[1], 'kind', 'threshold', 'value', 'expires_ms')
if not m[1] then return {'not_found', 0} end
local raw = redis.call('HGET', KEYS[2], ARGV[2])
if not raw then return {'not_owned', 0} end
local c = cjson.decode(raw)
local step, order = ARGV[1], ARGV[3]
if step == 'lock' then
  if c.state ~= 'claimed' then
    if c.order == order then return {'ok', tonumber(c.discount)} end
    return {'in_use', 0}
  end
  if tonumber(ARGV[5]) >= tonumber(m[4]) then return {'expired', 0} end
  local amount, threshold, value = tonumber(ARGV[4]), tonumber(m[2]), tonumber(m[3])
  if amount < threshold then return {'below_threshold', 0} end
  local d
  if m[1] == 'percent' then d = math.floor(amount * value / 100) else d = math.min(value, amount) end
  c.state, c.order, c.discount = 'locked', order, tostring(d)
  redis.call('HSET', KEYS[2], ARGV[2], cjson.encode(c))
  return {'ok', d}
elseif step == 'consume' then
  if c.order ~= order then return {'not_locked', 0} end
  if c.state == 'used' then return {'already', tonumber(c.discount)} end
  c.state, c.used_ms = 'used', ARGV[5]
  redis.call('HSET', KEYS[2], ARGV[2], cjson.encode(c))
  redis.call('HINCRBY', KEYS[1], 'used', 1)
  return {'ok', tonumber(c.discount)}
elseif step == 'restore' then
  if c.order ~= order then return {'noop', 0} end
  if c.state == 'used' then return {'used', 0} end
  c.state, c.order, c.discount = 'claimed', nil, nil
  redis.call('HSET', KEYS[2], ARGV[2], cjson.encode(c))
  return {'ok', 0}
end
return redis.error_reply('unknown step ' .. step)
