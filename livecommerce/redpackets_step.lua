-- The keeper's step on a due red packet (one slot: the packet's, {wallet:N}); the end is the
-- twin of livecommerce.redpackets.decide_end.
-- open and (expired or every share taken): end it, once: state 'ended', the coins nobody
-- grabbed (amount - taken) become a pending refund credit of the dropper. Then an ended
-- packet is leased to one announcer (the lease holder itself, or anyone once it expired).
-- KEYS[1] meta hash, KEYS[2] the shard's due set, KEYS[3] the shard's pending credits hash
-- ARGV[1] now_ms, ARGV[2] worker, ARGV[3] lease ms, ARGV[4] packet id
-- Returns {action, refunded}: 'open' (not due: re-indexed at its expiry), 'announce' (the
-- caller holds the lease), 'leased' (another announcer holds it), 'done' or 'missing'.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('ZREM', KEYS[2], ARGV[4])
  return {'missing', 0}
end
local now = tonumber(ARGV[1])
if state == 'open' then
  local expires = tonumber(redis.call('HGET', KEYS[1], 'expires_ms'))
  local grabbed = tonumber(redis.call('HGET', KEYS[1], 'grabbed'))
  if now < expires and grabbed < tonumber(redis.call('HGET', KEYS[1], 'count')) then
    redis.call('ZADD', KEYS[2], expires, ARGV[4])
    return {'open', 0}
  end
  local refund = tonumber(redis.call('HGET', KEYS[1], 'amount')) - tonumber(redis.call('HGET', KEYS[1], 'taken'))
  redis.call('HSET', KEYS[1], 'state', 'ended', 'ended_ms', now, 'refunded', refund)
  if refund > 0 then
    local cid = 'rp:' .. ARGV[4] .. ':refund'
    redis.call('HSET', KEYS[3], cid, cjson.encode({id = cid, kind = 'refund', user = redis.call('HGET', KEYS[1], 'by'),
      amount = refund, packet = ARGV[4], room = redis.call('HGET', KEYS[1], 'room'),
      by = redis.call('HGET', KEYS[1], 'by'), index = -1, ts = now}))
  end
  state = 'ended'
end
if state == 'ended' then
  local owner = redis.call('HGET', KEYS[1], 'lease_owner')
  local lease_until = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if owner == ARGV[2] or lease_until <= now then
    local until_ms = now + tonumber(ARGV[3])
    redis.call('HSET', KEYS[1], 'lease_owner', ARGV[2], 'lease_until', until_ms)
    redis.call('ZADD', KEYS[2], until_ms, ARGV[4])  -- looked at again if the announcer dies
    return {'announce', tonumber(redis.call('HGET', KEYS[1], 'refunded') or '0')}
  end
  return {'leased', 0}
end
redis.call('ZREM', KEYS[2], ARGV[4])
return {'done', 0}
