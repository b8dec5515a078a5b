-- One consistent read of a product: its definition and every SKU's units. One slot.
-- KEYS: 1 meta, 2 stock, 3 held, 4 sold, 5 stocked
-- Returns {def or '', v, created_ms, updated_ms, stock pairs, held pairs, sold pairs,
--          stocked pairs, flat meta (for a pin-era product without def)}
local m = redis.call('HMGET', KEYS[1], 'def', 'v', 'created_ms', 'updated_ms')
return {m[1] or '', m[2] or '0', m[3] or '0', m[4] or '0',
  redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4]),
  redis.call('HGETALL', KEYS[5]), redis.call('HGETALL', KEYS[1])}
