-- Enter one user into one lottery, atomically (all keys in the lottery's {lottery:ID} slot).
-- KEYS[1] meta hash, KEYS[2] members set, KEYS[3] ordered entrants list, KEYS[4] gift totals hash
-- ARGV[1] user, ARGV[2] now_ms (the caller's clock), ARGV[3] gift value to add (0: none)
-- Returns {code, n}: 'ok' (n = entrant position, 1-based), 'already_entered', 'not_found',
-- 'closed', 'room_ended' (closed because its room's show ended), or 'rule_not_met'
-- (n = the user's gift total so far, gift lotteries).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'not_found', 0} end
if state ~= 'open' then
  if string.sub(redis.call('HGET', KEYS[1], 'closed_by') or '', 1, 5) == 'room:' then return {'room_ended', 0} end
  return {'closed', 0}
end
if tonumber(ARGV[2]) >= tonumber(redis.call('HGET', KEYS[1], 'deadline_ms')) then
  return {'closed', 0}
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return {'already_entered', 0} end
if redis.call('HGET', KEYS[1], 'rule') == 'gift' then
  local need = tonumber(redis.call('HGET', KEYS[1], 'min_gift_value'))
  local total = redis.call('HINCRBY', KEYS[4], ARGV[1], tonumber(ARGV[3]))
  if total < need then return {'rule_not_met', total} end
end
redis.call('SADD', KEYS[2], ARGV[1])
return {'ok', redis.call('RPUSH', KEYS[3], ARGV[1])}
