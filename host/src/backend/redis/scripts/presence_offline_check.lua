-- Which of a tenant's members (users or channels), marked present, now have no count on any
-- live node; those are unmarked and the transition written to the tenant's transitions
-- stream in the same step, so it is written once however many nodes check at once.
-- KEYS: 1 the tenant's present hash, 2 the tenant's node set, 3 the transitions stream.
-- ARGV: 1 count-hash prefix, 2 oldest live heartbeat (ms), 3 node, 4 stream length cap (0:
--       nothing is written),
--       5 field ('user'|'channel'), 6 type ('offline'|'vacated'), 7... members.
-- Returns the members now gone. The count hashes it reads share the tenant's slot.
local nodes = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], '+inf')
local gone = {}
for i = 7, #ARGV do
  local member = ARGV[i]
  if redis.call('HGET', KEYS[1], member) == 'online' then
    local counted = false
    for _, n in ipairs(nodes) do
      if tonumber(redis.call('HGET', ARGV[1] .. n, member) or '0') > 0 then
        counted = true
        break
      end
    end
    if not counted then
      redis.call('HDEL', KEYS[1], member)
      if ARGV[4] ~= '0' then
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'type', ARGV[6], ARGV[5], member, 'node', ARGV[3])
      end
      gone[#gone + 1] = member
    end
  end
end
return gone
