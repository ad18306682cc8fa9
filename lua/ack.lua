--[[
  Acknowledge stream entries the snapshotter has committed to Postgres, move the queue's
  applied position (meta field `applied`) and trim the stream behind it.

  KEYS: the queue's keys (redisched/queue/keys.py); uses K_EVENTS and K_META
  ARGV[1]  the consumer group
  ARGV[2…] the ids of the entries now in Postgres

  Returns: the applied position: every entry with an id at or below it is in Postgres. With
  several consumers it is just below the oldest entry still pending, else the group's
  last-delivered id; it never moves back.
]]

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function less(a, b)
  local a_ms, a_seq = parse(a)
  local b_ms, b_seq = parse(b)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end

local function just_below(id)
  local ms, seq = parse(id)
  if seq > 0 then
    return string.format('%d-%d', ms, seq - 1)
  end
  return string.format('%d-18446744073709551615', ms - 1)
end

local function last_delivered(stream, group)
  for _, fields in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for i = 1, #fields, 2 do
      info[fields[i]] = fields[i + 1]
    end
    if info['name'] == group then
      return info['last-delivered-id']
    end
  end
end

redis.call('XACK', K_EVENTS, ARGV[1], unpack(ARGV, 2))

local pending = redis.call('XPENDING', K_EVENTS, ARGV[1])
local applied
if pending[1] > 0 then
  applied = just_below(pending[2])
else
  applied = last_delivered(K_EVENTS, ARGV[1])
end

local current = redis.call('HGET', K_META, 'applied')
if current and not less(current, applied) then
  return current
end
redis.call('HSET', K_META, 'applied', applied)
redis.call('XTRIM', K_EVENTS, 'MINID', '~', applied)
return applied
