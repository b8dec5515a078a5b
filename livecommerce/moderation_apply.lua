-- Apply one moderation change to a moderation hash, in its slot: a room's {room:ID}:mod, or
-- the platform's bans. KEYS[1] the hash.
-- ARGV[1] now (epoch ms), ARGV[2] the most moderators a room may have (0: no limit),
-- ARGV[3] n fields to set, then n (field, value) pairs, then the fields to delete.
-- Fields mute:<user>, kick:<user>, ban:<user> hold an until_ms ("0": for good); ended ones
-- are pruned here. The hash lives for good while it holds a moderator, a setting or a
-- for-good ban; otherwise it expires when its last timed entry ends.
-- Every change gets a version in field "v": above the hash's last one, seeded from the server
-- clock in microseconds (so it keeps rising after the hash expired); the caller announces it.
-- Returns {"ok", version}, or {"too_many_moderators", 0} (nothing changed).
local key = KEYS[1]
local now = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local sets = {}
local adding = 0
for i = 0, n - 1 do
  local f, v = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  sets[#sets + 1] = f
  sets[#sets + 1] = v
  if string.sub(f, 1, 2) == 'm:' and redis.call('HEXISTS', key, f) == 0 then
    adding = adding + 1
  end
end
if cap > 0 and adding > 0 then
  local mods = 0
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if string.sub(f, 1, 2) == 'm:' then mods = mods + 1 end
  end
  if mods + adding > cap then return {'too_many_moderators', 0} end
end
for i = 4 + 2 * n, #ARGV do
  redis.call('HDEL', key, ARGV[i])
end
if #sets > 0 then
  redis.call('HSET', key, unpack(sets))
end
local t = redis.call('TIME')
local version = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last_v = tonumber(redis.call('HGET', key, 'v') or '0')
if version <= last_v then version = last_v + 1 end
redis.call('HSET', key, 'v', string.format('%.0f', version))
-- prune what ended; find how long the hash must live
local all = redis.call('HGETALL', key)
local forever = false
local last = 0
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  local kind = string.match(f, '^(%a+):')
  if f == 'v' then
    -- the version: kept while the hash lives, not a reason to keep it
  elseif kind == 'mute' or kind == 'kick' or kind == 'ban' then
    local t = tonumber(v) or 0
    if t == 0 then
      forever = true
    elseif t <= now then
      redis.call('HDEL', key, f)
    elseif t > last then
      last = t
    end
  else
    forever = true
  end
end
if forever then
  redis.call('PERSIST', key)
elseif last > 0 then
  redis.call('PEXPIREAT', key, last + 60000)
else
  redis.call('PEXPIRE', key, 60000)  -- only the version is left: it goes a minute later
end
return {'ok', string.format('%.0f', version)}
