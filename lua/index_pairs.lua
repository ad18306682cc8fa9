--[[
  Build the (boefje id, image) pair index (common.lua, pair_name) for the tasks placed
  before it existed (a queue of an earlier version), a bounded batch per call: walks the
  boefje index from where the last call stopped (K_META pairs_cursor) and adds each placed
  task to K_PAIRS and K_HEADS. Tasks placed, popped or changed meanwhile keep the index
  right themselves (place/unplace), so the walk may meet them or not. Once the walk is
  through, K_META pairs = "ready", searches use the index (candidates.lua, pair_ranges) and
  the boefje and image indexes, which it replaces, are dropped.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1] the most members of the boefje index to look at in this call

  Returns: 1 when the pair index is ready, 0 when more calls are needed
]]
--- @include "common"

if redis.call('HGET', K_META, 'pairs') == 'ready' then
  return 1
end
local batch = tonumber(ARGV[1])
local cursor = redis.call('HGET', K_META, 'pairs_cursor') or '-'
local members = redis.call('ZRANGE', IX.boefje, cursor, '+', 'BYLEX', 'LIMIT', 0, batch)
for _, member in ipairs(members) do
  local at = string.find(member, NUL, 1, true)
  local order = at and string.sub(member, at + 1)
  local rec = order and load_named(order)
  -- a placed task: on the queue itself (a limited group's tasks past its head are not)
  if rec and rec.status == 'queued' and order_names(order, rec) and redis.call('ZSCORE', K_QUEUE, order) then
    place_pair(rec, order)
  end
end
if #members < batch then
  redis.call('HSET', K_META, 'pairs', 'ready')
  redis.call('HDEL', K_META, 'pairs_cursor')
  redis.call('UNLINK', IX.boefje, IX.image)  -- the pair index serves their filters now; freed off the main thread
  return 1
end
redis.call('HSET', K_META, 'pairs_cursor', '(' .. members[#members])
return 0
