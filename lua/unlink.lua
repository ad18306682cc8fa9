--[[
  A schedule was deleted: the named live tasks that still point at it get schedule_id null,
  as mula's foreign key does (ON DELETE SET NULL). modified_at stays, as in mula's rows.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1] the deleted schedule's id
  ARGV[2..] task ids (the caller sends a bounded batch)

  Returns: how many tasks were unlinked
  Emits: op=patch rec=<record> for each
]]
--- @include "common"

local schedule_id = ARGV[1]
local now = now_us()
local unlinked = 0
for i = 2, #ARGV do
  local rec = load_record(ARGV[i])
  if rec and rec.schedule_id == schedule_id then
    rec.schedule_id = nil
    save_record(rec, now, 'patch')
    unlinked = unlinked + 1
  end
end
finish(now, false)
return unlinked
