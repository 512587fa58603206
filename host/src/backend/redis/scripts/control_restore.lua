-- Puts back a control-plane state that the store lost: stores it with its own version only
-- if the stored version is lower, adds its plugin bytes, and announces the version.
-- KEYS: 1 the version, 2 the state, 3 the plugin bytes by hash (one hash slot).
-- ARGV: 1 the state's version, 2 the state as JSON, 3 the change channel, then pairs
-- (hash, bytes).
-- Returns 1 if restored, 0 if the stored version is not lower.
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v >= tonumber(ARGV[1]) then return 0 end
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
