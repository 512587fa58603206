-- A connection joins a Pusher presence channel as a user.
-- KEYS: 1 the channel's connection counts (`NODE\nUSER` -> count), 2 its members'
--       user_info (USER -> JSON), 3 the channels the node has members in
-- ARGV: 1 node, 2 user, 3 user_info JSON, 4 most users, 5 channel
-- Returns {1 if the user was in no connection of the channel before, else 0; the members'
-- info as HGETALL gives it}, or {-1} when the channel holds the most users already.
local suffix = '\n' .. ARGV[2]
local users, distinct, present = {}, 0, false
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  local user = string.sub(field, string.find(field, '\n', 1, true) + 1)
  if not users[user] then
    users[user] = true
    distinct = distinct + 1
  end
  if user == ARGV[2] then
    present = true
  end
end
if not present and distinct >= tonumber(ARGV[4]) then
  return {-1}
end
redis.call('HINCRBY', KEYS[1], ARGV[1] .. suffix, 1)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[5])
return {present and 0 or 1, redis.call('HGETALL', KEYS[2])}
