-- Send a batch of gifts, grouped by wallet shard, each decided in arrival order as a lone
-- wallet_gift.lua call would decide it right after the ones before it, plus request ids.
-- Twin of livecommerce.wallet.decide_gift_batch (tests/test_wallet_batch.py).
-- The keys of a group are in its shard's slot ({wallet:N}); a call is one atomic step. On
-- Redis Cluster a call holds one group (one slot); on a single Redis it may hold several.
-- Per group, KEYS: the balances hash (user -> coins), the outbox hash (event id -> packed
-- event), then per gift in order the sender's combo string for this room and gift
-- ("combo_id|total", expires) and, for a gift with a request id only, its request record.
-- ARGV[1] combo window ms, ARGV[2] request record lifetime ms, then per group two values:
-- its number of gifts n and their blob: per gift "cost US count US requested combo id (''
-- for none) US new combo id US event id US request fingerprint ('' for no request id) US
-- byte length of the user US byte length of the packed event US" then the user and the
-- packed event (US = \31; ids hold no US, the user and the event are taken by length). One
-- argument per group instead of several per gift keeps the caller's encoding cheap.
-- Returns 5 values per gift: code, balance, combo id, combo total, event id; code 'ok'
-- (debited), 'dup' (the request was debited before: its first balance, combo and event),
-- 'insufficient_funds' (balance, '', 0, ''), 'idempotency_conflict' (0, '', 0, '').
-- A request record is "fingerprint\nbalance\ncombo id\ntotal\nevent id".
local function split(s, sep, n)
  -- the first n - 1 fields separated by sep, then the rest of s as field n
  local f, p = {}, 1
  for _ = 1, n - 1 do
    local q = string.find(s, sep, p, true)
    f[#f + 1] = string.sub(s, p, q - 1)
    p = q + 1
  end
  f[n] = string.sub(s, p)
  return f
end

local out = {}
local k = 1
local a = 3
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  local blob = ARGV[a + 1]
  local bal_key, out_key = KEYS[k], KEYS[k + 1]
  a = a + 2
  k = k + 2
  local p = 1
  for _ = 1, n do
    local h = {}
    for j = 1, 8 do
      local q = string.find(blob, '\31', p, true)
      h[j] = string.sub(blob, p, q - 1)
      p = q + 1
    end
    local cost, count, want, new_id, eid, fp = tonumber(h[1]), tonumber(h[2]), h[3], h[4], h[5], h[6]
    local ulen, elen = tonumber(h[7]), tonumber(h[8])
    local user = string.sub(blob, p, p + ulen - 1)
    local packed = string.sub(blob, p + ulen, p + ulen + elen - 1)
    p = p + ulen + elen
    local ckey = KEYS[k]
    local rkey = nil
    k = k + 1
    if fp ~= '' then
      rkey = KEYS[k]
      k = k + 1
    end
    local rec = rkey and redis.call('GET', rkey)
    if rec then
      local g = split(rec, '\n', 5)
      if g[1] == fp then
        out[#out + 1] = 'dup'; out[#out + 1] = tonumber(g[2]); out[#out + 1] = g[3]
        out[#out + 1] = tonumber(g[4]); out[#out + 1] = g[5]
      else
        out[#out + 1] = 'idempotency_conflict'; out[#out + 1] = 0; out[#out + 1] = ''
        out[#out + 1] = 0; out[#out + 1] = ''
      end
    else
      local bal = tonumber(redis.call('HGET', bal_key, user) or '0')
      if cost > bal then
        out[#out + 1] = 'insufficient_funds'; out[#out + 1] = bal; out[#out + 1] = ''
        out[#out + 1] = 0; out[#out + 1] = ''
      else
        bal = redis.call('HINCRBY', bal_key, user, 0 - cost)  -- not -cost: -0 is no integer to Redis
        redis.call('HSET', out_key, eid, packed)
        local cid, total
        local prev = redis.call('GET', ckey)
        if prev then
          local sep = string.find(prev, '|', 1, true)
          local pid = string.sub(prev, 1, sep - 1)
          if want == '' or want == pid then
            cid = pid
            total = tonumber(string.sub(prev, sep + 1)) + count
          end
        end
        if not cid then
          if want ~= '' then cid = want else cid = new_id end
          total = count
        end
        redis.call('SET', ckey, cid .. '|' .. total, 'PX', ARGV[1])
        if rkey then
          redis.call('SET', rkey, fp .. '\n' .. bal .. '\n' .. cid .. '\n' .. total .. '\n' .. eid, 'PX', ARGV[2])
        end
        out[#out + 1] = 'ok'; out[#out + 1] = bal; out[#out + 1] = cid
        out[#out + 1] = total; out[#out + 1] = eid
      end
    end
  end
end
return out
