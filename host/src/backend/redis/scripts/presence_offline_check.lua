-- Which of a tenant's users, reported online, now have no connection on any live node;
-- those are removed from the online hash.
-- KEYS: 1 the tenant's online hash, 2 the tenant's node set.
-- ARGV: 1 node-hash prefix, 2 oldest live heartbeat (ms), 3... users.
-- Returns the users now offline. The node hashes it reads share the tenant's slot.
local nodes = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], '+inf')
local offline = {}
for i = 3, #ARGV do
  local user = ARGV[i]
  if redis.call('HGET', KEYS[1], user) == 'online' then
    local connected = false
    for _, n in ipairs(nodes) do
      if tonumber(redis.call('HGET', ARGV[1] .. n, user) or '0') > 0 then
        connected = true
        break
      end
    end
    if not connected then
      redis.call('HDEL', KEYS[1], user)
      offline[#offline + 1] = user
    end
  end
end
return offline
