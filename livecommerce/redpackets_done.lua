-- A red packet's end was announced: 'ended' -> 'announced', off the due set, its keys kept
-- for the record's lifetime. One slot: the packet's ({wallet:N}).
-- KEYS[1] meta, KEYS[2] shares, KEYS[3] grabs, KEYS[4] order, KEYS[5] the shard's due set
-- ARGV[1] packet id, ARGV[2] now_ms, ARGV[3] record lifetime ms
-- Returns 1 when this call announced it, 0 when it was not 'ended' (announced, or gone).
local state = redis.call('HGET', KEYS[1], 'state')
redis.call('ZREM', KEYS[5], ARGV[1])
if state ~= 'ended' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'announced', 'announced_ms', ARGV[2])
for i = 1, 4 do
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
end
return 1
