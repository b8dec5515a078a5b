-- Give a settled sale's keys their lifetime (docs/retention.md). One slot: {sale:ID}.
-- KEYS: 1 meta, 2 stock, 3 buyers, 4 req, 5 orders, 6 deadlines, 7 counts, then any other
--       keys of the sale (refunds, ann:*, f:*): every existing one gets the same lifetime
-- ARGV: 1 lifetime (ms)
-- Settled: the sale is ended (no reserve can come) and no hold waits for its payment
-- (counts.reserved == 0 and the deadlines queue is empty). Paid holds stay readable for
-- the lifetime, which covers the refund window; a refund settled later gives its record
-- the sale's remaining lifetime (flash_sale_refund.lua).
-- Returns {'ok'} | {'open', state, reserved} | {'no_sale'}
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'no_sale'} end
local reserved = tonumber(redis.call('HGET', KEYS[7], 'reserved') or '0')
if state ~= 'ended' or reserved > 0 or redis.call('ZCARD', KEYS[6]) > 0 then
  return {'open', state, reserved}
end
for i = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return {'ok'}
