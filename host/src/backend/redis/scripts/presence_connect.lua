-- A connection of a user opened on a node.
-- KEYS: the node's presence hash, the tenant's online hash. ARGV: user.
-- Returns 1 when the user just came online.
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if redis.call('HGET', KEYS[2], ARGV[1]) == 'online' then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], 'online')
return 1
