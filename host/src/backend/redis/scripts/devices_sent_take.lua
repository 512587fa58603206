-- Takes the sent pushes a user has read (Devices::take_read): those of EPOCH at or before
-- ACKED are removed and returned; those of another epoch are removed (their events are
-- gone); those that lapsed were dropped when recorded.
-- KEYS: the user's sent pushes (a sorted set: offset -> JSON). ARGV: EPOCH, ACKED.
local taken = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local out = {}
for _, json in ipairs(taken) do
  redis.call('ZREM', KEYS[1], json)
  if cjson.decode(json).epoch == ARGV[1] then out[#out + 1] = json end
end
for _, json in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if cjson.decode(json).epoch ~= ARGV[1] then redis.call('ZREM', KEYS[1], json) end
end
return out
