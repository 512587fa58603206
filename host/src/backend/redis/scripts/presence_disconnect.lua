-- A connection of a user closed on a node.
-- KEYS: the node's presence hash. ARGV: user.
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
