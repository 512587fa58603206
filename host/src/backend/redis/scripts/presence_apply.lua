-- Connections of a tenant's users (or subscriptions of its channels) that opened or closed on
-- a node, applied in order: one call per batch, so a burst of connects costs one script run,
-- not one per connection. A member that comes (from no count on any node) is marked present
-- and the transition written to the tenant's transitions stream in the same step, so it is
-- written once however many nodes see it at once.
-- KEYS: 1 the node's count hash, 2 the tenant's present hash, 3 the transitions stream.
-- ARGV: 1 node, 2 stream length cap (0: no one reads it, nothing is written), 3 field ('user'|'channel'), 4 type ('online'|'occupied'),
--       5... member, change, member, change, ... (a change is +N for N opened, -1 for one
--       closed)
-- Returns, per change, 1 when the member just came, else 0.
local came = {}
for i = 5, #ARGV, 2 do
  local member, change = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('HINCRBY', KEYS[1], member, change) <= 0 then
    redis.call('HDEL', KEYS[1], member)
  end
  local now = 0
  if change > 0 and redis.call('HGET', KEYS[2], member) ~= 'online' then
    redis.call('HSET', KEYS[2], member, 'online')
    if ARGV[2] ~= '0' then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'type', ARGV[4], ARGV[3], member, 'node', ARGV[1])
    end
    now = 1
  end
  came[#came + 1] = now
end
return came
