-- Append several events to one log partition stream in one call (RedisLog.append_many).
-- KEYS[1] the partition stream; ARGV[1] approximate MAXLEN ('' for none), ARGV[2..] the
-- packed events (field 'e' of each entry), appended in order with auto ids.
-- Returns the number of entries appended.
local cap = ARGV[1]
for i = 2, #ARGV do
  if cap == '' then
    redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
  else
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', cap, '*', 'e', ARGV[i])
  end
end
return #ARGV - 1
