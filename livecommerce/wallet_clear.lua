-- Forget published outbox entries, grouped by wallet shard (RedisWallet.clear).
-- KEYS[i] the outbox hash of group i; ARGV[i] its event ids, each as "byte length US id"
-- (US = \31), concatenated. On Redis Cluster a call holds one group (one slot); on a
-- single Redis it may hold several. Returns the number of entries removed.
local removed = 0
for i = 1, #KEYS do
  local blob, p = ARGV[i], 1
  while p <= #blob do
    local q = string.find(blob, '\31', p, true)
    local n = tonumber(string.sub(blob, p, q - 1))
    removed = removed + redis.call('HDEL', KEYS[i], string.sub(blob, q + 1, q + n))
    p = q + n + 1
  end
end
return removed
