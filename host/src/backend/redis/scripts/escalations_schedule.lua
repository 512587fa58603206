-- Schedules escalations (Escalations::schedule): each is added or moved, a new one only
-- while fewer than MAX wait.
-- KEYS: the due-time sorted set, the bodies hash. ARGV: MAX, then per escalation its id,
-- due time (ms) and body. Returns how many were taken.
local max = tonumber(ARGV[1])
local taken = 0
for i = 2, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('ZSCORE', KEYS[1], id) or redis.call('ZCARD', KEYS[1]) < max then
    redis.call('ZADD', KEYS[1], ARGV[i + 1], id)
    redis.call('HSET', KEYS[2], id, ARGV[i + 2])
    taken = taken + 1
  end
end
return taken
