--[[
  Bring the fair pop's structures (fair_index.lua) up to date with the queue, a bounded batch
  per call: with fairness on, walks the queue from where the last call stopped (K_META
  fair_cursor) and places each task in them (idempotent: a task there already costs a few
  no-op commands). Tasks placed, popped or changed meanwhile keep them right themselves, so
  the walk may meet them or not. Once through, K_META fair = "ready". Called without the
  fair keys (fairness off), it forgets that state: the structures go stale while off, and the
  next start with fairness on walks again (what is left stale heals where pops meet it:
  members naming no queued task are removed, an organisation listed with none is taken off).

  KEYS: the queue's keys (redisched/queue/keys.py), the fair keys with fairness on
  ARGV[1] the most queue members to look at in this call

  Returns: 1 when the structures are up to date (or fairness is off), 0 when more calls are needed
]]
--- @include "common"

if not fair.on then
  redis.call('HDEL', K_META, 'fair', 'fair_cursor')
  return 1
end
if redis.call('HGET', K_META, 'fair') == 'ready' then
  return 1
end
local batch = tonumber(ARGV[1])
local cursor = redis.call('HGET', K_META, 'fair_cursor') or '-'
local members = redis.call('ZRANGE', K_QUEUE, cursor, '+', 'BYLEX', 'LIMIT', 0, batch)
for _, order in ipairs(members) do
  local rec = load_named(order)
  if rec and rec.status == 'queued' and order_names(order, rec) then
    fair.place(rec, order, pair_of(rec))
  end
end
if #members < batch then
  redis.call('HSET', K_META, 'fair', 'ready')
  redis.call('HDEL', K_META, 'fair_cursor')
  return 1
end
redis.call('HSET', K_META, 'fair_cursor', '(' .. members[#members])
return 0
