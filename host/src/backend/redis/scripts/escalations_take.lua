-- Takes due escalations (Escalations::take): each is hidden until the lease ends by moving
-- its due time there, so one node sends it, and another when that node dies holding it.
-- KEYS: the due-time sorted set, the bodies hash. ARGV: now (ms), the most to take, the
-- lease's end (ms). Returns id, due time, body, ... (an id without a body is dropped).
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i = 1, #due, 2 do
  local id = due[i]
  local body = redis.call('HGET', KEYS[2], id)
  if body then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[3], id)
    out[#out + 1] = id
    out[#out + 1] = due[i + 1]
    out[#out + 1] = body
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
