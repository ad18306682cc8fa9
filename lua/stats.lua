--[[
  Read a queue's figures for the dashboard, without changing anything. Bounded whatever the
  queue depth: a few O(log N) reads, the rates ring's last buckets, and one index lookup
  per organisation up to a cap (never a walk over tasks).

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1] how many of the latest rate buckets to return (at most RATE_SLOTS)
  ARGV[2] the most organisations to return
  ARGV[3] the most limit groups to return (the latest pushed, from K_LIMGROUPS)

  Returns: {now µs, depth, leased, leases past their expiry,
            next lease to expire: task id, expiry ms, status, modified_at µs ("" when none),
            last_activity µs or "", stream length, the newest event's id or "", the id up to
            which the snapshotter applied the stream to Postgres or "",
            the newest bucket's number, then per op (push, pop, fail) that many counts, newest last,
            organisations counted k, then k pairs organisation, depth,
            limit groups known, returned g, then g times: group, spacing ms, concurrency
            (0: none), leased, ms before which none may go (0: none), queued in the group}
]]
--- @include "common"

local buckets, max_orgs, max_groups = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_us()
local now_ms = math.floor(now / 1000)
local reply = {
  us_string(now),
  queued_count(),
  redis.call('ZCARD', K_LEASES),
  redis.call('ZCOUNT', K_LEASES, '-inf', now_ms),
}

local first = redis.call('ZRANGE', K_LEASES, 0, 0, 'WITHSCORES')
local rec = first[1] and load_record(first[1])
if rec then
  for _, value in ipairs({rec.id, first[2], rec.status, rec.modified_at}) do
    reply[#reply + 1] = value
  end
else
  for _ = 1, 4 do
    reply[#reply + 1] = ''
  end
end
reply[#reply + 1] = redis.call('HGET', K_META, 'last_activity') or ''
reply[#reply + 1] = redis.call('XLEN', K_EVENTS)
local newest_event = redis.call('XREVRANGE', K_EVENTS, '+', '-', 'COUNT', 1)[1]
reply[#reply + 1] = newest_event and newest_event[1] or ''
reply[#reply + 1] = redis.call('HGET', K_META, 'applied') or ''

local newest = math.floor(now / RATE_BUCKET_US)
reply[#reply + 1] = newest
for _, op in ipairs({'push', 'pop', 'fail'}) do
  local fields = {}
  for bucket = newest - buckets + 1, newest do
    fields[#fields + 1] = op .. ':' .. (bucket % RATE_SLOTS)
  end
  local stored = redis.call('HMGET', K_RATES, unpack(fields))
  for i = 1, buckets do
    local total = tonumber(stored[i] or '')
    local at, count = total and math.floor(total / RATE_COUNT_SPAN), total and total % RATE_COUNT_SPAN
    if not total then  -- an earlier version's "<bucket>:<count>"
      at, count = string.match(stored[i] or '', '^(%d+):(%d+)$')
    end
    reply[#reply + 1] = tonumber(at) == newest - buckets + i and tonumber(count) or 0
  end
end

-- Organisations with queued tasks, in name order: each step skips past the previous
-- organisation's whole slice of the index ("<organisation>\0<order key>").
local counted_at = #reply + 1
reply[counted_at] = 0
local after = '-'
while reply[counted_at] < max_orgs do
  local member = redis.call('ZRANGE', IX.org, after, '+', 'BYLEX', 'LIMIT', 0, 1)[1]
  if not member then
    break
  end
  local org = string.sub(member, 1, string.find(member, NUL, 1, true) - 1)
  reply[#reply + 1] = org
  reply[#reply + 1] = redis.call('ZLEXCOUNT', IX.org, '[' .. org .. NUL, '(' .. org .. '\1')
  reply[counted_at] = reply[counted_at] + 1
  after = '[' .. org .. '\1'
end

reply[#reply + 1] = redis.call('ZCARD', K_LIMGROUPS)
local groups = redis.call('ZRANGE', K_LIMGROUPS, 0, max_groups - 1, 'REV')
reply[#reply + 1] = #groups
for _, group in ipairs(groups) do
  local spacing, cap, active, at = group_state(group, now_ms)
  for _, value in ipairs({group, spacing, cap, active, at}) do
    reply[#reply + 1] = value
  end
  reply[#reply + 1] = redis.call('ZLEXCOUNT', K_LIMQ, '[' .. group .. NUL, '(' .. group .. '\1')
end
return reply
