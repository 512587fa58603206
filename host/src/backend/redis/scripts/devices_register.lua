-- Registers a device of a user (Devices::register): replaces one with its id, or adds it
-- when the user and the tenant are below their limits, counting it.
-- KEYS: the user's devices hash, the tenant's device count.
-- ARGV: the device id, its JSON, the most per user, the most per tenant (0: no limit).
-- Returns 0 (replaced), 1 (added), -1 (the user is full), -2 (the tenant is full); with
-- the count that was full.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return {0, 0}
end
local mine = redis.call('HLEN', KEYS[1])
if mine >= tonumber(ARGV[3]) then return {-1, mine} end
local all = tonumber(redis.call('GET', KEYS[2]) or '0')
local max = tonumber(ARGV[4])
if max > 0 and all >= max then return {-2, all} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return {1, 0}
