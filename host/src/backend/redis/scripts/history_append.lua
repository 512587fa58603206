-- Appends one event to a stream's history and publishes it on the stream's channel in one
-- step, so no node receives an event that history lacks, or the reverse.
-- KEYS: 1 the stream's position hash, 2 its events (a Redis stream with ids OFFSET-0)
-- ARGV: 1 channel, 2 PUBLISH or SPUBLISH, 3 events kept, 4 events' ttl (ms),
--       5 position ttl (ms), 6 now (ms), 7 epoch if this starts a new history,
--       8 envelope head, 9 event JSON before the position, 10 event JSON after it
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  -- A new history: events left from a lost one must not mix with its offsets.
  epoch = ARGV[7]
  redis.call('DEL', KEYS[2])
  -- Its creation second (Redis's clock) is what looks are compared with (history_look.lua).
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'created', redis.call('TIME')[1])
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local json = ARGV[9] .. ',"epoch":"' .. epoch .. '","offset":' .. offset .. ARGV[10]
-- The complete WebSocket text frame (unmasked, FIN), as the host's frame encoder makes it.
local n = #json
local header
if n < 126 then
  header = string.char(129, n)
elseif n < 65536 then
  header = string.char(129, 126, math.floor(n / 256), n % 256)
else
  local b = {}
  for i = 8, 1, -1 do
    b[i] = n % 256
    n = math.floor(n / 256)
  end
  header = string.char(129, 127, unpack(b))
end
local position = epoch .. ':' .. offset
local envelope = ARGV[8] .. string.char(#position) .. position .. header .. json
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 't', ARGV[6], 'e', envelope)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call(ARGV[2], ARGV[1], envelope)
return offset
