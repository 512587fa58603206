-- Whether a user who was online has no connection left on any live node.
-- KEYS: the tenant's online hash, the tenant's node set.
-- ARGV: user, node-hash prefix, oldest live heartbeat (ms).
-- Returns 1 when the user was online and no live node counts a connection (now offline).
-- The node hashes it reads share the tenant's slot.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'online' then return 0 end
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[3], '+inf')) do
  if tonumber(redis.call('HGET', ARGV[2] .. n, ARGV[1]) or '0') > 0 then return 0 end
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
