-- A connection leaves a Pusher presence channel, or a dead node's connections all do.
-- KEYS: 1 the channel's connection counts (`NODE\nUSER` -> count), 2 its members'
--       user_info (USER -> JSON)
-- ARGV: 1 node, 2 the user leaving, or empty: every user of the node leaves
-- Returns the users now in no connection of the channel. Running it again for a node
-- already gone returns nothing, so each departure is reported once.
local prefix = ARGV[1] .. '\n'
local leaving = {}
if ARGV[2] ~= '' then
  local field = prefix .. ARGV[2]
  local n = redis.call('HINCRBY', KEYS[1], field, -1)
  if n > 0 then
    return {}
  end
  redis.call('HDEL', KEYS[1], field)
  if n < 0 then
    return {}
  end
  leaving[ARGV[2]] = true
else
  local fields = redis.call('HKEYS', KEYS[1])
  for _, field in ipairs(fields) do
    if string.sub(field, 1, #prefix) == prefix then
      redis.call('HDEL', KEYS[1], field)
      leaving[string.sub(field, #prefix + 1)] = true
    end
  end
end
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  leaving[string.sub(field, string.find(field, '\n', 1, true) + 1)] = nil
end
local gone = {}
for user in pairs(leaving) do
  redis.call('HDEL', KEYS[2], user)
  table.insert(gone, user)
end
return gone
