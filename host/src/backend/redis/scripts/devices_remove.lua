-- Removes a device of a user (Devices::remove), counting it out of the tenant's devices.
-- KEYS: the user's devices hash, the tenant's device count. ARGV: the device id.
-- Returns 1 when it was there.
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('DECR', KEYS[2])
  return 1
end
return 0
