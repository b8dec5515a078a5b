-- Apply one red packet credit (a grabbed share or a refund) to its recipient's wallet, once
-- per credit id, and write its ledger event to the outbox in the same step.
-- Every key is in the recipient's wallet shard ({wallet:M}).
-- KEYS[1] balances hash, KEYS[2] outbox hash, KEYS[3] the credit's mark (expires)
-- ARGV[1] user, ARGV[2] amount, ARGV[3] event id (= credit id), ARGV[4] packed event,
-- ARGV[5] mark lifetime ms
-- Returns {1, balance} (credited now) or {0, balance} (credited before: nothing done).
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {0, tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')}
end
local bal = redis.call('HINCRBY', KEYS[1], ARGV[1], tonumber(ARGV[2]))
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[5])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return {1, bal}
