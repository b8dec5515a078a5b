-- Claim one coupon of a drop for one user. All keys in the drop's {coupon:ID} slot.
-- Twin of livecommerce.coupons.decide_claim (same order of checks; tests/test_rule_parity.py).
-- KEYS[1] meta hash, KEYS[2] remaining counter, KEYS[3] owners hash (user -> coupon JSON),
-- KEYS[4] members set (a segment drop: the segment's members when it dropped)
-- ARGV[1] user, ARGV[2] now_ms, ARGV[3] retention ms after expiry (then the keys expire)
-- Returns {code, remaining}: 'ok', 'not_found', 'not_eligible', 'expired', 'already_claimed',
-- 'sold_out', 'room_ended' (the drop was closed when its room's show ended).
local m = redis.call('HMGET', KEYS[1], 'expires_ms', 'only_user', 'segment', 'closed_by')
if not m[1] then return {'not_found', 0} end
if m[2] and m[2] ~= '' and m[2] ~= ARGV[1] then return {'not_found', 0} end
if m[4] and string.sub(m[4], 1, 5) == 'room:' then return {'room_ended', 0} end
if m[3] and m[3] ~= '' and (not KEYS[4] or redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 0) then
  return {'not_eligible', 0}
end
if tonumber(ARGV[2]) >= tonumber(m[1]) then return {'expired', 0} end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  return {'already_claimed', tonumber(redis.call('GET', KEYS[2]) or '0')}
end
local left = tonumber(redis.call('GET', KEYS[2]) or '0')
if left <= 0 then return {'sold_out', 0} end
left = redis.call('DECR', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[1], cjson.encode({state = 'claimed', claimed_ms = ARGV[2]}))
redis.call('PEXPIREAT', KEYS[3], tonumber(m[1]) + tonumber(ARGV[3]))
return {'ok', left}
