--[[
  Finish and fetch in one step, as BullMQ's moveToFinished with fetch-next: patch a task
  (patch.lua: typically its runner's "completed" or "failed" with its lease token), then,
  when the patch went through, pop the runner's next task from the same queue partition
  (pop.lua). A refused patch pops nothing. Several runners' calls of one partition with the
  same pop arguments may come as one (queue/pipeliner.py): each patch in turn, then one pop
  that serves, in order, each caller whose patch went through with its own lease token.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1] n, how many patches (1 .. 256)
  ARGV[2 .. 1+5n] patch.lua's ARGV for the n patches (5 each)
  ARGV[2+5n ..] pop.lua's ARGV, its ARGV[1] the n pops' lease tokens, comma separated

  Returns: per patch, in order: {patched record, patched data, {pop.lua's reply for its
  pop}}, or patch.lua's error code.
  Emits: what patch.lua and pop.lua emit.
]]
--- @include "common"
--- @include "filter"
--- @include "candidates"
--- @operation "patch"
--- @operation "pop"

local args = ARGV
local n = tonumber(args[1])
local pop_args = {}
if n ~= nil and n >= 1 and n <= 256 and n % 1 == 0 then
  pop_args = {unpack(args, 2 + 5 * n)}
end
local tokens = {}
for token in string.gmatch(pop_args[1] or '', '[^,]+') do
  tokens[#tokens + 1] = token
end
if n == nil or #tokens ~= n then
  return redis.error_reply('pop_next: ARGV[1] must count the patches (1 .. 256), one lease token each')
end
if pop_args[3] ~= 'dispatched' and pop_args[3] ~= 'running' then
  return redis.error_reply('pop_next: the pop\'s ARGV[3] must be "dispatched" or "running"')
end
pop_follows = true  -- K_META is read and written once for the patches and the pop (common.lua)
local replies, served, served_tokens = run_patch({unpack(args, 2, 1 + 5 * n)}), {}, {}
pop_follows = false
if replies.err then
  return replies  -- patch.lua refused its arguments
end
for i = 1, n do
  if type(replies[i]) == 'table' then
    served[#served + 1] = i
    served_tokens[#served_tokens + 1] = tokens[i]
  end
end
if #served > 0 then
  pop_args[1] = table.concat(served_tokens, ',')
  local popped = run_pop(pop_args)
  local j = 1
  for _, i in ipairs(served) do
    local count = popped[j]
    replies[i] = {replies[i][1], replies[i][2], {unpack(popped, j, j + 2 * count)}}
    j = j + 1 + 2 * count
  end
else
  finish(0, false)
end
return replies
