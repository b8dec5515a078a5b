-- Drop a red packet: debit the dropper, store the packet and its shares, index it as due at
-- its expiry, write the redpacket.debit event to the outbox; once per (user, request id).
-- Every key is in the dropper's wallet shard ({wallet:N}): the packet lives in that slot.
-- KEYS[1] balances hash, KEYS[2] outbox hash, KEYS[3] the packet's meta hash, KEYS[4] its
-- shares list, KEYS[5] the shard's due set (packet id -> when the keeper looks), KEYS[6]
-- the drop request record ("fingerprint\npacket id", expires)
-- ARGV[1] user, ARGV[2] amount, ARGV[3] packet id, ARGV[4] debit event id, ARGV[5] packed
-- event, ARGV[6] expires_ms, ARGV[7] request record lifetime ms, ARGV[8] fingerprint,
-- ARGV[9] the shares, comma-separated, ARGV[10..] meta field, value pairs
-- Returns {'ok', balance}, {'dup', first packet id}, {'idempotency_conflict', ''} or
-- {'insufficient_funds', balance}.
local rec = redis.call('GET', KEYS[6])
if rec then
  local nl = string.find(rec, '\n', 1, true)
  if string.sub(rec, 1, nl - 1) == ARGV[8] then return {'dup', string.sub(rec, nl + 1)} end
  return {'idempotency_conflict', ''}
end
local amount = tonumber(ARGV[2])
local bal = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if amount > bal then return {'insufficient_funds', bal} end
bal = redis.call('HINCRBY', KEYS[1], ARGV[1], 0 - amount)
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
for i = 10, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[3], 'state', 'open', 'grabbed', 0, 'taken', 0)
for share in string.gmatch(ARGV[9], '[^,]+') do
  redis.call('RPUSH', KEYS[4], share)
end
redis.call('ZADD', KEYS[5], tonumber(ARGV[6]), ARGV[3])
redis.call('SET', KEYS[6], ARGV[8] .. '\n' .. ARGV[3], 'PX', ARGV[7])
return {'ok', bal}
