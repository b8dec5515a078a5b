-- Compare-and-set a lottery's state (one slot: the lottery's meta hash).
-- KEYS[1] meta hash
-- ARGV[1] expected state, ARGV[2] new state, ARGV[3..] field, value pairs to set with it
-- Returns {1, new state} when applied, else {0, current state or ''}.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= ARGV[1] then return {0, state or ''} end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return {1, ARGV[2]}
