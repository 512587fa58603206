-- Takes one webhook dead letter out of a tenant's list, once however many nodes ask at once.
-- KEYS: 1 the tenant's dead-letter list (entries `<id>\n<json>`).
-- ARGV: 1 the letter's id.
-- Returns the entry, or nil when there is none with that id.
local prefix = ARGV[1] .. '\n'
for _, entry in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.sub(entry, 1, #prefix) == prefix then
    redis.call('LREM', KEYS[1], 1, entry)
    return entry
  end
end
return false
