-- Pay or release one hold, exactly once: the atomic twin of catalog.hold_step.
-- One slot: {product:ID}.
-- KEYS: 1 stock, 2 held, 3 sold, 4 holds, 5 deadlines, 6 settled, 7 bought
-- ARGV: 1 hold id, 2 'pay' | 'release', 3 now (ms)
-- pay:     reserved -> paid (units move from held to sold), unless now > pay-by: 'expired'
-- release: reserved -> cancelled (units go back to stock; the user's counted units drop)
-- Returns {outcome}: paid | released | already_paid | already_cancelled | already_released
--        | expired | unknown
local raw = redis.call('HGET', KEYS[4], ARGV[1])
if not raw then return {'unknown'} end
local h = cjson.decode(raw)
local step = ARGV[2]
if h.s == 'paid' then return {'already_paid'} end
if h.s == 'cancelled' then
  if step == 'pay' then return {'already_cancelled'} end
  return {'already_released'}
end
if step == 'pay' and tonumber(ARGV[3]) > tonumber(h.p) then return {'expired'} end
local lines = cjson.decode(h.l)
for _, line in ipairs(lines) do
  local sku, qty = line[1], tonumber(line[2])
  redis.call('HINCRBY', KEYS[2], sku, -qty)
  if step == 'pay' then
    redis.call('HINCRBY', KEYS[3], sku, qty)
  else
    redis.call('HINCRBY', KEYS[1], sku, qty)
  end
end
if step == 'release' and h.c then
  for _, line in ipairs(cjson.decode(h.c)) do
    local f = h.u .. '|' .. line[1]
    if tonumber(redis.call('HINCRBY', KEYS[7], f, -tonumber(line[2]))) <= 0 then redis.call('HDEL', KEYS[7], f) end
  end
end
if step == 'pay' then h.s = 'paid' else h.s = 'cancelled' end
redis.call('HSET', KEYS[4], ARGV[1], cjson.encode(h))
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[1])
if step == 'pay' then return {'paid'} end
return {'released'}
