--[[
  Finish and fetch in one step, as BullMQ's moveToFinished with fetch-next: patch a task
  (patch.lua: typically its runner's "completed" or "failed" with its lease token), then,
  when the patch went through, pop the runner's next task from the same queue partition
  (pop.lua). A refused patch pops nothing.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1..5] patch.lua's ARGV
  ARGV[6..]  pop.lua's ARGV (the next pop's lease token first)

  Returns: {patched record, patched data, {pop.lua's reply}}, or patch.lua's error code.
  Emits: what patch.lua and pop.lua emit.
]]
--- @include "common"
--- @include "filter"
--- @include "candidates"
--- @operation "patch"
--- @operation "pop"

local args = ARGV
local patched = run_patch({args[1], args[2], args[3], args[4], args[5]})
if type(patched) ~= 'table' then
  return patched
end
return {patched[1], patched[2], run_pop({unpack(args, 6)})}
