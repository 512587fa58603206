-- Merges a token revocation into the user's stored one (Revoked::merge): the later time,
-- the later lapse, the union of token ids (the newest MAX kept), so two revocations made at
-- once on two nodes both hold for nodes that start later.
-- KEYS: the revocations hash. ARGV: the field (tenant:user), the revocation as JSON, MAX.
local new = cjson.decode(ARGV[2])
local old = redis.call('HGET', KEYS[1], ARGV[1])
local ids = {}
local seen = {}
local function add(list)
  if type(list) ~= 'table' then return end
  for _, id in ipairs(list) do
    if not seen[id] then
      seen[id] = true
      ids[#ids + 1] = id
    end
  end
end
if old then
  local was = cjson.decode(old)
  new.before = math.max(new.before, was.before)
  new['until'] = math.max(new['until'], was['until'])
  add(was.ids)
end
add(new.ids)
local max = tonumber(ARGV[3])
local kept = {}
for i = math.max(1, #ids - max + 1), #ids do kept[#kept + 1] = ids[i] end
local out = '{"before":' .. string.format('%d', new.before) .. ',"until":' .. string.format('%d', new['until'])
if #kept > 0 then out = out .. ',"ids":' .. cjson.encode(kept) end
redis.call('HSET', KEYS[1], ARGV[1], out .. '}')
return 1
