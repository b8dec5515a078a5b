-- Send a gift: debit the sender, grow the combo, write the gift.sent event to the outbox.
-- All keys are in the sender's wallet shard ({wallet:N}), so this is one atomic step.
-- KEYS[1] balances hash (user -> coins), KEYS[2] outbox hash (event id -> packed event),
-- KEYS[3] the user's combo string for this room and gift ("combo_id|total", expires)
-- ARGV[1] user, ARGV[2] cost (coins), ARGV[3] count (units), ARGV[4] requested combo id
-- ('' for none), ARGV[5] new combo id, ARGV[6] combo window ms, ARGV[7] event id,
-- ARGV[8] packed event
-- Returns {1, balance, combo_id, combo_total} or {0, balance, '', 0} (insufficient funds).
-- Twin of livecommerce.wallet.decide_debit and livecommerce.gifts.next_combo.
local bal = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local cost = tonumber(ARGV[2])
if cost > bal then return {0, bal, '', 0} end
bal = redis.call('HINCRBY', KEYS[1], ARGV[1], 0 - cost)  -- not -cost: -0 is no integer to Redis
redis.call('HSET', KEYS[2], ARGV[7], ARGV[8])
local count = tonumber(ARGV[3])
local cid, total
local prev = redis.call('GET', KEYS[3])
if prev then
  local sep = string.find(prev, '|', 1, true)
  local pid = string.sub(prev, 1, sep - 1)
  if ARGV[4] == '' or ARGV[4] == pid then
    cid = pid
    total = tonumber(string.sub(prev, sep + 1)) + count
  end
end
if not cid then
  if ARGV[4] ~= '' then cid = ARGV[4] else cid = ARGV[5] end
  total = count
end
redis.call('SET', KEYS[3], cid .. '|' .. total, 'PX', ARGV[6])
return {1, bal, cid, total}
