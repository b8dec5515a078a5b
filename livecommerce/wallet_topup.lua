-- Credit a top-up once per (user, idempotency key), and write wallet.topup to the outbox.
-- All keys are in the user's wallet shard ({wallet:N}).
-- KEYS[1] balances hash, KEYS[2] outbox hash, KEYS[3] top-ups hash ("key|user" -> amount)
-- ARGV[1] user, ARGV[2] amount, ARGV[3] top-up field, ARGV[4] event id, ARGV[5] packed event
-- Returns {1, balance} (credited), {0, balance} (this key was used before with the same
-- amount: nothing done) or {-1, balance} (the key was used with another amount).
local seen = redis.call('HGET', KEYS[3], ARGV[3])
if seen then
  local bal = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
  if seen == ARGV[2] then return {0, bal} end
  return {-1, bal}
end
local bal = redis.call('HINCRBY', KEYS[1], ARGV[1], tonumber(ARGV[2]))
redis.call('HSET', KEYS[3], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
return {1, bal}
