-- Deletes a key only while it holds the given value (a lease's holder, an idempotency
-- key's owner).
-- KEYS: the key. ARGV: the value.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end
