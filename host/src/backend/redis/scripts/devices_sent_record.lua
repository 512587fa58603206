-- Keeps a push sent to a user until they read it (Devices::record_sent): the newest MAX are
-- kept, and the set lives until the last of them lapses.
-- KEYS: the user's sent pushes (a sorted set: offset -> JSON). ARGV: the offset, the JSON,
-- how long it is kept (ms), MAX.
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[4]) + 1))
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
