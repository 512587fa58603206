-- Moves a user's read cursor forward to an acked offset of the current epoch.
-- KEYS: 1 the user stream's position hash
-- ARGV: 1 epoch, 2 offset, 3 position ttl (ms)
-- Returns {epoch, latest offset, read cursor, 1 if taken or 0 if refused}.
local m = redis.call('HMGET', KEYS[1], 'epoch', 'offset', 'acked')
local last = tonumber(m[2]) or 0
local acked = tonumber(m[3]) or 0
if not m[1] or m[1] ~= ARGV[1] or tonumber(ARGV[2]) > last then
  return {m[1] or '', last, acked, 0}
end
if tonumber(ARGV[2]) > acked then
  acked = tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'acked', acked)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {m[1], last, acked, 1}
