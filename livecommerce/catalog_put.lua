-- Store a product's definition with a compare-and-set on its version. One slot: {product:ID}.
-- KEYS: 1 meta, 2 stock, 3 stocked, 4 off, 5 moves
-- ARGV: 1 expected version (0: the product must not be defined yet), 2 definition (canonical
--       JSON), 3 name, 4 lowest active price, 5 image, 6 category, 7 owner, 8 state, 9 now (ms),
--       10 number of SKUs, then per SKU: id, archived ('1'|'0'), initial stock of a new SKU
-- A SKU the stock hash does not know yet starts with its initial stock (one stock move, logged
-- in `moves`: field <sku> is the SKU's move counter, <sku>/<n> the move); known SKUs keep theirs.
-- Returns {'ok', new version, sku, delta, seq, ...} (the moves made)
--       | {'stale', current version}   another change came first: read again and retry
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if redis.call('HEXISTS', KEYS[1], 'def') == 0 then cur = 0 end  -- a bare pin-era product is adopted
if cur ~= tonumber(ARGV[1]) then return {'stale', cur} end
local v = cur + 1
local created = redis.call('HGET', KEYS[1], 'created_ms')
if cur == 0 or not created then created = ARGV[9] end
redis.call('HSET', KEYS[1], 'def', ARGV[2], 'v', v, 'id', cjson.decode(ARGV[2]).id, 'name', ARGV[3],
  'price', ARGV[4], 'image', ARGV[5], 'category', ARGV[6], 'owner', ARGV[7], 'state', ARGV[8],
  'created_ms', created, 'updated_ms', ARGV[9])
local out = {'ok', v}
local n = tonumber(ARGV[10])
for i = 0, n - 1 do
  local sku, archived, init = ARGV[11 + 3 * i], ARGV[12 + 3 * i], tonumber(ARGV[13 + 3 * i])
  if redis.call('HEXISTS', KEYS[2], sku) == 0 then
    redis.call('HSET', KEYS[2], sku, init)
    redis.call('HINCRBY', KEYS[3], sku, init)
    if init > 0 then
      local seq = redis.call('HINCRBY', KEYS[5], sku, 1)
      redis.call('HSET', KEYS[5], sku .. '/' .. seq, cjson.encode({d = init, t = tonumber(ARGV[9]), r = 'create'}))
      table.insert(out, sku)
      table.insert(out, init)
      table.insert(out, seq)
    end
  end
  if archived == '1' then redis.call('SADD', KEYS[4], sku) else redis.call('SREM', KEYS[4], sku) end
end
return out
