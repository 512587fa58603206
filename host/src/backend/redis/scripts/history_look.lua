-- Looks, shared by the history read and ack scripts (prepended to each).
-- A stream that never held an event (or was forgotten) has no keys, and reading it keeps
-- nothing: the read answers offset 0 of a look epoch, STORE .. hex(second of the read).
-- STORE names one lifetime of the hash slot's data (`notify:store:{TAG}`, made once and
-- never expiring), so a look from before a flush or a lost Redis is not mistaken for one
-- of this store. A client at offset 0 of a look has missed nothing of a stream created at
-- or after the look and less than a stream's lifetime after it: an earlier incarnation
-- created after the look would still exist, because a position hash lives at least its
-- lifetime (the position ttl) after its creation.

-- The slot's store id; `new` becomes it when the slot has none.
local function store_id(key, new)
  local store = redis.call('GET', key)
  if not store then
    redis.call('SET', key, new)
    store = new
  end
  return store
end

local function now_secs()
  return tonumber(redis.call('TIME')[1])
end

-- Whether a client at `epoch`:`offset` is at offset 0 of a look of `store` that covers a
-- stream created at second `created` (for a stream that still does not exist: now).
-- `position_ttl` is the stream's lifetime in ms.
local function covers(store, epoch, offset, created, position_ttl)
  if tonumber(offset) ~= 0 or string.sub(epoch, 1, #store) ~= store then
    return false
  end
  local looked = tonumber(string.sub(epoch, #store + 1), 16)
  -- Whole seconds on both ends: a second less than the shortest lifetime.
  local lifetime = math.floor(tonumber(position_ttl) / 1000) - 1
  return looked ~= nil and looked <= created and created - looked < lifetime
end

