-- Compare-and-set a room's state, recording the show statistics with it (one slot: {room:ID}).
-- KEYS[1] meta hash, KEYS[2] the room's likes counter, KEYS[3] the show's distinct viewers
-- (a HyperLogLog, emptied when a show starts)
-- ARGV[1] expected state, ARGV[2] new state ('live' or 'ended'), ARGV[3] now_ms, ARGV[4] online now
-- Returns {1, new state} when applied, else {0, current state or ''}.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= ARGV[1] then return {0, state or ''} end
local likes = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[2] == 'live' then
  redis.call('HSET', KEYS[1], 'state', 'live', 'live_ms', ARGV[3], 'ended_ms', '',
    'likes_base', likes, 'likes_end', '', 'comments', 0, 'peak_online', ARGV[4], 'online_sum', 0, 'online_samples', 0)
  redis.call('HDEL', KEYS[1], 'closed', 'followers_base', 'followers_end')  -- the previous show's
  redis.call('DEL', KEYS[3])
elseif ARGV[2] == 'ended' then
  local peak = tonumber(redis.call('HGET', KEYS[1], 'peak_online') or '0')
  if tonumber(ARGV[4]) > peak then peak = tonumber(ARGV[4]) end
  redis.call('HSET', KEYS[1], 'state', 'ended', 'ended_ms', ARGV[3], 'likes_end', likes,
    'peak_online', peak)
else
  return redis.error_reply('unknown room state ' .. ARGV[2])
end
return {1, ARGV[2]}
