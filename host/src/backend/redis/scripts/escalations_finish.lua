-- Removes escalations for good (Escalations::finish).
-- KEYS: the due-time sorted set, the bodies hash. ARGV: their ids.
for _, id in ipairs(ARGV) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return #ARGV
