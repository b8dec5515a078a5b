-- Create a coupon drop once. All keys in the drop's {coupon:ID} slot.
-- KEYS[1] meta hash, KEYS[2] remaining counter
-- ARGV[1] quantity, ARGV[2] keep-until ms (keys expire then), ARGV[3..] field, value pairs
-- Returns 1 (created) or 0 (the id exists: nothing changed).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[2], ARGV[2])
return 1
