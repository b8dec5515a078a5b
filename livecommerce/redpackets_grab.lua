-- Grab the next share of a red packet (twin of livecommerce.redpackets.decide_grab): at most one share per user, never more shares than
-- the packet has, only while it is open and before its expiry (the caller's clock).
-- Every key is in the packet's slot (its dropper's wallet shard, {wallet:N}).
-- KEYS[1] meta hash, KEYS[2] shares list, KEYS[3] grabs hash (user -> "index|amount|at_ms"),
-- KEYS[4] grab order list, KEYS[5] the shard's pending credits hash (credit id -> JSON),
-- KEYS[6] the shard's due set
-- ARGV[1] user, ARGV[2] now_ms, ARGV[3] packet id
-- Returns {code, amount, index, left, pending credit JSON}: 'ok' (the share taken now and
-- its pending credit), 'already_grabbed' (the user's first share and index), 'not_found',
-- 'ended', 'expired' or 'empty'.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'not_found', 0, 0, 0, ''} end
local prev = redis.call('HGET', KEYS[3], ARGV[1])
if prev then
  local a = string.find(prev, '|', 1, true)
  local b = string.find(prev, '|', a + 1, true)
  return {'already_grabbed', tonumber(string.sub(prev, a + 1, b - 1)), tonumber(string.sub(prev, 1, a - 1)), 0, ''}
end
if state ~= 'open' then return {'ended', 0, 0, 0, ''} end
local now = tonumber(ARGV[2])
if now >= tonumber(redis.call('HGET', KEYS[1], 'expires_ms')) then return {'expired', 0, 0, 0, ''} end
local count = tonumber(redis.call('HGET', KEYS[1], 'count'))
local index = tonumber(redis.call('HGET', KEYS[1], 'grabbed'))
if index >= count then return {'empty', 0, 0, 0, ''} end
local amount = tonumber(redis.call('LINDEX', KEYS[2], index))
redis.call('HSET', KEYS[3], ARGV[1], index .. '|' .. amount .. '|' .. ARGV[2])
redis.call('RPUSH', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'grabbed', 1)
redis.call('HINCRBY', KEYS[1], 'taken', amount)
local cid = 'rp:' .. ARGV[3] .. ':' .. index
local pending = cjson.encode({id = cid, kind = 'credit', user = ARGV[1], amount = amount, packet = ARGV[3],
  room = redis.call('HGET', KEYS[1], 'room'), by = redis.call('HGET', KEYS[1], 'by'), index = index, ts = now})
redis.call('HSET', KEYS[5], cid, pending)
if index + 1 == count then
  redis.call('ZADD', KEYS[6], 0, ARGV[3])  -- emptied: the keeper ends it at its next look
end
return {'ok', amount, index, count - index - 1, pending}
