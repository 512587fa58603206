-- Replaces the control-plane state if its version is still the expected one, and announces
-- the new version to every node.
-- KEYS: 1 the version, 2 the state (one hash slot). ARGV: 1 expected version, 2 the state
-- as JSON, 3 the change channel.
-- Returns {1, new version} or {0, current version}.
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v ~= tonumber(ARGV[1]) then return {0, v} end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], v + 1)
redis.call('PUBLISH', ARGV[3], v + 1)
return {1, v + 1}
