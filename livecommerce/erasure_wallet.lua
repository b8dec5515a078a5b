-- Move an erased user's wallet balance to their pseudonym: two calls, one slot each.
-- ARGV[1] = 'out': KEYS[1] balances hash and KEYS[2] erasing hash of the user's shard;
--   ARGV[2] user, ARGV[3] now (ms). Takes the balance out once: records "balance|now" under
--   the user in erasing (a retry gets the same record back) and deletes the balance.
--   Returns the record.
-- ARGV[1] = 'in': KEYS[1] balances hash and KEYS[2] credited hash of the pseudonym's shard;
--   ARGV[2] pseudonym, ARGV[3] token ("pseudonym:now"), ARGV[4] amount. Credits once per
--   token. Returns the pseudonym's balance.
-- ARGV[1] = 'done': KEYS[1] erasing hash; ARGV[2] user. Forgets the record.
if ARGV[1] == 'out' then
  local rec = redis.call('HGET', KEYS[2], ARGV[2])
  if rec then return rec end
  local bal = redis.call('HGET', KEYS[1], ARGV[2]) or '0'
  rec = bal .. '|' .. ARGV[3]
  redis.call('HSET', KEYS[2], ARGV[2], rec)
  redis.call('HDEL', KEYS[1], ARGV[2])
  return rec
end
if ARGV[1] == 'in' then
  if redis.call('HSETNX', KEYS[2], ARGV[3], 1) == 1 and tonumber(ARGV[4]) ~= 0 then
    redis.call('HINCRBY', KEYS[1], ARGV[2], tonumber(ARGV[4]))
  end
  return tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
end
redis.call('HDEL', KEYS[1], ARGV[2])
return 1
