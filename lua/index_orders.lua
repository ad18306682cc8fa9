--[[
  Move the tasks an earlier version queued under text order keys (common.lua, text_order_of:
  72 to 75 B) to packed ones (order_of: 35 B), a bounded batch per call: first the limit
  groups' waiting set (K_LIMQ, walked from K_META orders_cursor), then the queue's text part
  (its members from '0' on, above every packed one, from its start: each member met leaves it). A task met is
  taken off every place it holds under the text key and put under its packed one
  (move_to_own_order); a member naming no queued task is removed, as a pop would. Meanwhile
  every script reads both forms, and the tasks queued since, packed, go first.
  Once through, K_META orders = "packed".

  KEYS: the queue's keys (redisched/queue/keys.py), the fair keys with fairness on
  ARGV[1] the most members to look at in this call

  Returns: 1 when no text order key is left, 0 when more calls are needed
]]
--- @include "common"

if orders_packed() then
  return 1
end

-- Whether the member of `order` is to move: it names its queued task (in `group`, for a
-- waiting set's member), as its text key or (written by hand) placed nowhere else.
local function moves(rec, order, group)
  return rec and rec.status == 'queued' and (group == nil or rec.lg == group)
    and (order_names(order, rec) or not placed_under_own(rec))
end

local batch = tonumber(ARGV[1])
local cursor = redis.call('HGET', K_META, 'orders_cursor')
if cursor ~= 'queue' then
  local members = redis.call('ZRANGE', K_LIMQ, cursor or '-', '+', 'BYLEX', 'LIMIT', 0, batch)
  for _, member in ipairs(members) do
    local at = string.find(member, NUL, 1, true)
    local group, order = string.sub(member, 1, (at or 1) - 1), string.sub(member, (at or #member) + 1)
    if not at then
      redis.call('ZREM', K_LIMQ, member)
      redis.call('HINCRBY', K_META, 'stray_members', 1)
    elseif #order ~= PACKED_ORDER_LENGTH then
      local rec = load_named(order)
      if moves(rec, order, group) then
        move_to_own_order(rec, order)
      else
        drop_group_stray(group, order)
        refresh_group(group)
      end
    end
  end
  redis.call('HSET', K_META, 'orders_cursor', #members < batch and 'queue' or ('(' .. members[#members]))
  return 0
end
local members = redis.call('ZRANGE', K_QUEUE, '[0', '+', 'BYLEX', 'LIMIT', 0, batch)
for _, order in ipairs(members) do
  local rec = load_named(order)
  if moves(rec, order) then
    move_to_own_order(rec, order)
  else
    drop_stray_member(K_QUEUE, order)
  end
end
flush_strays()
if #members < batch then
  redis.call('HSET', K_META, 'orders', 'packed')
  redis.call('HDEL', K_META, 'orders_cursor')
  return 1
end
return 0
