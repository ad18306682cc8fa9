--[[
  Drop finished tasks from Redis once Postgres has them, so Redis holds live work only.
  A task is dropped only if it is still the version Postgres stored (same rev) and still
  finished: a task re-queued meanwhile stays.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV: pairs of task id, rev

  Returns: how many tasks were dropped
]]
--- @include "common"

local dropped = 0
for i = 1, #ARGV, 2 do
  local rec = load_record(ARGV[i])
  local finished = rec and (rec.status == 'completed' or rec.status == 'failed' or rec.status == 'cancelled')
  if finished and rec.rev == ARGV[i + 1] then
    redis.call('HDEL', K_TASKS, rec.id)
    redis.call('HDEL', K_DATA, rec.id)
    dropped = dropped + 1
  end
end
return dropped
