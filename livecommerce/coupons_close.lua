-- Close a coupon drop because its room's show ended (one slot: the drop's {coupon:ID}).
-- Claims then answer 'room_ended'; coupons already claimed stay usable.
-- KEYS[1] meta hash; ARGV[1] the show's stamp (room:<ended_ms>), ARGV[2] now_ms
-- Returns 1 when the drop is closed by this stamp (now, or before), 0 otherwise (gone, or
-- closed by another show).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local stamp = redis.call('HGET', KEYS[1], 'closed_by')
if not stamp then
  redis.call('HSET', KEYS[1], 'closed_by', ARGV[1], 'closed_ms', ARGV[2])
  return 1
end
if stamp == ARGV[1] then return 1 end
return 0
