-- One consistent snapshot of a stream: its epoch, latest offset, read cursor, the kept
-- events after the replay start, and whether the client's position is a look that covers
-- the stream (its offset 0). A stream with no position hash is reported as a look and
-- nothing is written (see history_look.lua).
-- KEYS: 1 the stream's position hash, 2 its events, 3 its slot's store id
-- ARGV: 1 a store id if the slot has none, 2 position ttl (ms),
--       3 the client's epoch ('' for none), 4 its offset, 5 '1' to start at the read cursor
--       when that is earlier (acks)
-- The start is chosen as `plan` in history/mod.rs chooses it.
local m = redis.call('HMGET', KEYS[1], 'epoch', 'offset', 'acked', 'created')
if not m[1] then
  local store, now = store_id(KEYS[3], ARGV[1]), now_secs()
  local covered = covers(store, ARGV[3], ARGV[4], now, ARGV[2])
  return {store .. string.format('%x', now), 0, 0, {}, covered and 1 or 0}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local epoch = m[1]
local last = tonumber(m[2]) or 0
local acked = tonumber(m[3]) or 0
-- Hashes written before streams recorded their creation are never covered by a look.
local covered = m[4] and covers(store_id(KEYS[3], ARGV[1]), ARGV[3], ARGV[4], tonumber(m[4]), ARGV[2])
local start = -1
if covered then
  start = 0
elseif ARGV[3] == epoch then
  if tonumber(ARGV[4]) <= last then start = tonumber(ARGV[4]) end
elseif ARGV[3] ~= '' then
  -- Another history of the stream: all of this one is new to the client.
  start = 0
end
if ARGV[5] == '1' and (start < 0 or acked < start) then
  start = acked
end
local events = {}
if start >= 0 and start < last then
  events = redis.call('XRANGE', KEYS[2], (start + 1) .. '-0', '+')
end
return {epoch, last, acked, events, covered and 1 or 0}
