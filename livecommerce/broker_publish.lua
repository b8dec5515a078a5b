-- Publish one room event: next seq, capped history, broadcast. One slot: {room:ID}.
-- KEYS[1] seq counter, KEYS[2] history stream, KEYS[3] room channel
-- ARGV[1] body, ARGV[2] history cap, ARGV[3] history ttl (s), ARGV[4] now (ms),
-- ARGV[5] PUBLISH or SPUBLISH
local seq
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- seed from the clock so seqs keep rising after a restart that lost the counter
  seq = tonumber(ARGV[4]) * 1000 + 1
  redis.call('SET', KEYS[1], seq)
else
  seq = redis.call('INCR', KEYS[1])
end
local sid = string.format('%.0f', seq)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], sid .. '-0', 'd', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
-- the counter goes with its history: a room quiet that long (ended) leaves nothing behind,
-- and its next event seeds the seq from the clock again, above every seq it gave out
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call(ARGV[5], KEYS[3], sid .. ':' .. ARGV[1])
return seq
