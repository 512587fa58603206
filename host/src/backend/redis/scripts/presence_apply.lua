-- Connections of a tenant's users that opened or closed on a node, applied in order: one
-- call per batch, so a burst of connects costs one script run, not one per connection.
-- KEYS: 1 the node's presence hash, 2 the tenant's online hash.
-- ARGV: user, change, user, change, ... (a change is +N for N connections opened, -1 for one
--       closed)
-- Returns, per change, 1 when the user just came online, else 0.
local came = {}
for i = 1, #ARGV, 2 do
  local user, change = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('HINCRBY', KEYS[1], user, change) <= 0 then
    redis.call('HDEL', KEYS[1], user)
  end
  local online = 0
  if change > 0 and redis.call('HGET', KEYS[2], user) ~= 'online' then
    redis.call('HSET', KEYS[2], user, 'online')
    online = 1
  end
  came[#came + 1] = online
end
return came
