--[[
  Take back a dispatched task its runner hands back unstarted (OpenKAT's boefje runner, when
  it stops, pushes the tasks it popped but had not begun as whole Task bodies). The task goes
  back on its queue at once, in its old place: its own priority, created_at and data; its
  lease ends. Its tries stay: nothing failed.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1] task id
  ARGV[2] the task's hash, as the runner holds it

  Returns: {record JSON, data JSON} as stored, or an error code
    E_NOT_FOUND when no task with this id and this hash is dispatched in this queue,
    E_CONFLICT when a twin with the same hash was queued meanwhile.
  Emits: op=patch rec=<record>
]]
--- @include "common"

local rec = load_record(ARGV[1])
if not rec or rec.status ~= 'dispatched' or not is_set(rec.hash) or rec.hash ~= ARGV[2] then
  return E_NOT_FOUND
end
if queued_twin(rec) then
  return E_CONFLICT
end
local now = now_us()
redis.call('ZREM', K_LEASES, rec.id)
rec.lease = nil
rec.status = 'queued'
rec.modified_at = us_string(now)
free_group(rec)
enqueue(rec)
local raw = save_record(rec, now, 'patch')
finish(now, true)
return {raw, load_data(rec.id)}
