-- Read a room's history after a seq. One slot: {room:ID}.
-- KEYS[1] seq counter, KEYS[2] history stream; ARGV[1] since, ARGV[2] limit
-- Returns {top, first_seq_or_0, entries...} with entries as flat {id, body, id, body...}
local top = tonumber(redis.call('GET', KEYS[1]) or '0')
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local first_seq = 0
if #first > 0 then
  first_seq = tonumber(string.match(first[1][1], '^(%d+)'))
end
local out = {top, first_seq}
local rows = redis.call('XRANGE', KEYS[2], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
for _, row in ipairs(rows) do
  out[#out + 1] = row[1]
  out[#out + 1] = row[2][2]
end
return out
