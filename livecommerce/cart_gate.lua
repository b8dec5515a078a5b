-- A cart order's gate: its record and state, moved by cart.ORDER_STEPS exactly once.
-- One slot: {order:ID}. KEYS: 1 the gate hash (rec: the order JSON, req: the request's
-- fingerprint, state, reason, paid_ms, settled_ms)
-- ARGV: 1 step 'open' | 'pay' | 'cancel' | 'refuse', 2 now (ms), then
--   open:   3 request fingerprint, 4 record JSON, 5 pay-by (ms), 6 ttl (s)
--   pay:    3 pay-by is read from the record
--   cancel: 3 reason
--   refuse: 3 reason code, 4 the refusal JSON
-- Returns open:   {'opened'} | {'dup', state} | {'exists'} (another request made this id)
--         pay:    {'paid', paid_ms} | {'already_paid', paid_ms} | {'already_cancelled'} | {'expired'} | {'unknown'}
--         cancel: {'released'} | {'already_released'} | {'already_paid'} | {'unknown'}
--         refuse: {'refused'} | {'already_' .. state} | {'unknown'}
local step, now = ARGV[1], tonumber(ARGV[2])
if step == 'open' then
  local req = redis.call('HGET', KEYS[1], 'req')
  if req then
    if req == ARGV[3] then return {'dup', redis.call('HGET', KEYS[1], 'state')} end
    return {'exists'}
  end
  redis.call('HSET', KEYS[1], 'req', ARGV[3], 'rec', ARGV[4], 'state', 'reserved', 'pay_by', ARGV[5], 'created_ms', ARGV[2])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
  return {'opened'}
end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown'} end
if step == 'pay' then
  if state == 'paid' then return {'already_paid', redis.call('HGET', KEYS[1], 'paid_ms')} end
  if state ~= 'reserved' then return {'already_cancelled'} end
  if now >= tonumber(redis.call('HGET', KEYS[1], 'pay_by')) then return {'expired'} end
  redis.call('HSET', KEYS[1], 'state', 'paid', 'paid_ms', ARGV[2])
  return {'paid', ARGV[2]}
elseif step == 'cancel' then
  if state == 'paid' then return {'already_paid'} end
  if state ~= 'reserved' then return {'already_released'} end
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'reason', ARGV[3], 'settled_ms', ARGV[2])
  return {'released'}
elseif step == 'refuse' then
  if state ~= 'reserved' then return {'already_' .. state} end
  redis.call('HSET', KEYS[1], 'state', 'refused', 'reason', ARGV[3], 'refusal', ARGV[4], 'settled_ms', ARGV[2])
  return {'refused'}
end
return redis.error_reply('unknown step ' .. step)
