-- One consistent snapshot of a stream: its epoch, latest offset, read cursor, and the kept
-- events after the replay start. Starts a new history (epoch) when the stream has none.
-- KEYS: 1 the stream's position hash, 2 its events
-- ARGV: 1 epoch if this starts a new history, 2 position ttl (ms),
--       3 the client's epoch ('' for none), 4 its offset, 5 '1' to start at the read cursor
--       when that is earlier (acks)
-- The start is chosen as `plan` in history/mod.rs chooses it.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local m = redis.call('HMGET', KEYS[1], 'offset', 'acked')
local last = tonumber(m[1]) or 0
local acked = tonumber(m[2]) or 0
local start = -1
if ARGV[3] == epoch and tonumber(ARGV[4]) <= last then
  start = tonumber(ARGV[4])
end
if ARGV[5] == '1' and (start < 0 or acked < start) then
  start = acked
end
local events = {}
if start >= 0 and start < last then
  events = redis.call('XRANGE', KEYS[2], (start + 1) .. '-0', '+')
end
return {epoch, last, acked, events}
