-- Start or end one sale (the lifecycle steps of flash_sale.SALE_TRANSITIONS that ops and the
-- scheduler drive; sell_out and restock happen inside reserve and release). One slot.
-- KEYS: 1 meta, 2 stock
-- ARGV: 1 'start' | 'end' | 'close', 2 now (ms), 3 the show's stamp (room:<ended_ms>, 'close')
-- 'close' is the room's end: a live or sold-out sale ends, stamped closed_by (reserve then
-- answers 'room_ended'); a sale in another state is left alone ('skip').
-- Returns {outcome, state}: outcome 'ok' (changed), 'noop' (already so), 'illegal',
-- 'late' (start after the window closed), 'skip', 'no_sale'.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'no_sale', ''} end
local now = tonumber(ARGV[2])
if ARGV[1] == 'close' then
  if state == 'ended' and redis.call('HGET', KEYS[1], 'closed_by') == ARGV[3] then return {'noop', state} end
  if state ~= 'live' and state ~= 'sold_out' then return {'skip', state} end
  if now < tonumber(redis.call('HGET', KEYS[1], 'ends_ms')) then
    redis.call('HSET', KEYS[1], 'ends_ms', ARGV[2])
  end
  redis.call('HSET', KEYS[1], 'state', 'ended', 'closed_by', ARGV[3])
  return {'ok', 'ended'}
end
if ARGV[1] == 'start' then
  if state == 'live' or state == 'sold_out' then return {'noop', state} end
  if state ~= 'scheduled' then return {'illegal', state} end
  local m = redis.call('HMGET', KEYS[1], 'starts_ms', 'ends_ms')
  if now >= tonumber(m[2]) then return {'late', state} end
  -- a host may open a prepared sale early: the window starts now and keeps its length
  -- (flash_sale.early_window), so "10 minutes" stays 10 minutes
  if now < tonumber(m[1]) then
    redis.call('HSET', KEYS[1], 'starts_ms', ARGV[2], 'ends_ms', tostring(tonumber(m[2]) - (tonumber(m[1]) - now)))
  end
  local new = 'live'
  if tonumber(redis.call('GET', KEYS[2])) <= 0 then new = 'sold_out' end
  redis.call('HSET', KEYS[1], 'state', new)
  return {'ok', new}
end
-- end
if state == 'ended' then return {'noop', state} end
-- stopped early: the window closes now, so every node judging by time agrees
if now < tonumber(redis.call('HGET', KEYS[1], 'ends_ms')) then
  redis.call('HSET', KEYS[1], 'ends_ms', ARGV[2])
end
redis.call('HSET', KEYS[1], 'state', 'ended')
return {'ok', 'ended'}
