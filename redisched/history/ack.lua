--[[ Acknowledge stream entries the snapshotter has committed to Postgres, move the queue's
  applied position and trim the stream behind it.

  KEYS[1]  <p>:{<q>}:events   the event stream
  KEYS[2]  <p>:{<q>}:meta     field `applied`
  ARGV[1]  the consumer group
  ARGV[2…] the ids of the entries now in Postgres

  Returns the applied position: every entry with an id at or below it is in Postgres. With
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

redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))

local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
local applied
if pending[1] > 0 then
    applied = just_below(pending[2])
else
    applied = last_delivered(KEYS[1], ARGV[1])
end

local current = redis.call('HGET', KEYS[2], 'applied')
if current and not less(current, applied) then
    return current
end
redis.call('HSET', KEYS[2], 'applied', applied)
redis.call('XTRIM', KEYS[1], 'MINID', '~', applied)
return applied
