-- Append several events to one log partition stream in one call (RedisLog.append_many).
-- KEYS[1] the partition stream; ARGV[1] approximate MAXLEN ('' for none), ARGV[2] the
-- packed events (field 'e' of each entry), each as "byte length US packed event" (US =
-- \31), concatenated: appended in order with auto ids. One argument for the whole batch
-- keeps the caller's encoding cheap. Returns the number of entries appended.
local cap, blob, p, n = ARGV[1], ARGV[2], 1, 0
while p <= #blob do
  local q = string.find(blob, '\31', p, true)
  local len = tonumber(string.sub(blob, p, q - 1))
  local e = string.sub(blob, q + 1, q + len)
  if cap == '' then
    redis.call('XADD', KEYS[1], '*', 'e', e)
  else
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', cap, '*', 'e', e)
  end
  p = q + len + 1
  n = n + 1
end
return n
