-- Replaces the control-plane state if its version is still the expected one, stores the new
-- plugin bytes, drops the bytes the new state no longer names, and announces the new version
-- to every node.
-- KEYS: 1 the version, 2 the state, 3 the plugin bytes by hash (one hash slot).
-- ARGV: 1 expected version, 2 the state as JSON, 3 the change channel, 4 the number n of new
-- blobs, then n pairs (hash, bytes), then every hash the new state names.
-- Returns {1, new version} or {0, current version}.
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v ~= tonumber(ARGV[1]) then return {0, v} end
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  redis.call('HSET', KEYS[3], ARGV[5 + 2 * i], ARGV[6 + 2 * i])
end
local named = {}
for i = 5 + 2 * n, #ARGV do named[ARGV[i]] = true end
for _, hash in ipairs(redis.call('HKEYS', KEYS[3])) do
  if not named[hash] then redis.call('HDEL', KEYS[3], hash) end
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], v + 1)
redis.call('PUBLISH', ARGV[3], v + 1)
return {1, v + 1}
