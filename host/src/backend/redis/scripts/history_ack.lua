-- Moves a user's read cursor forward to an acked offset of the current epoch. Offset 0 of a
-- look that covers the stream is taken and changes nothing (see history_look.lua).
-- KEYS: 1 the user stream's position hash, 2 its slot's store id
-- ARGV: 1 epoch, 2 offset, 3 position ttl (ms), 4 a store id if the slot has none
-- Returns {epoch, latest offset, read cursor, 1 if taken or 0 if refused, 1 if it moved the
-- cursor or 0}.
local m = redis.call('HMGET', KEYS[1], 'epoch', 'offset', 'acked', 'created')
if not m[1] then
  -- Nothing to ack in a stream that holds nothing; it is reported as a look.
  local store, now = store_id(KEYS[2], ARGV[4]), now_secs()
  local taken = covers(store, ARGV[1], ARGV[2], now, ARGV[3])
  return {store .. string.format('%x', now), 0, 0, taken and 1 or 0, 0}
end
local last = tonumber(m[2]) or 0
local acked = tonumber(m[3]) or 0
local look = m[1] ~= ARGV[1] and m[4] and covers(store_id(KEYS[2], ARGV[4]), ARGV[1], ARGV[2], tonumber(m[4]), ARGV[3])
if not look and (m[1] ~= ARGV[1] or tonumber(ARGV[2]) > last) then
  return {m[1], last, acked, 0, 0}
end
local moved = 0
if tonumber(ARGV[2]) > acked then
  acked = tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'acked', acked)
  moved = 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {m[1], last, acked, 1, moved}
