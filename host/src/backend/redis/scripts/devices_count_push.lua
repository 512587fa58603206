-- Counts a push of a user against the hourly cap (Devices::count_push): the pushes of the
-- last hour are kept as a sorted set of times; a push is counted while fewer than MAX are.
-- KEYS: the user's pushes of the last hour. ARGV: now (ms), MAX, the hour (ms), a unique
-- member. Returns 1 when counted.
local now, hour = tonumber(ARGV[1]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - hour)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], hour)
return 1
