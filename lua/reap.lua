--[[
  Take back tasks whose lease expired: a runner that vanished does not strand its task.
  Each expiry counts a try; a task goes back on its queue, or is marked failed once it has
  used its tries (or when a twin with the same hash was queued meanwhile). Bounded per call.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1] the most tasks to reap in this call
  ARGV[2] tries allowed: the expiry that reaches this count fails the task

  Returns: {requeued count, failed count}
  Emits: op=reap rec=<record> per task
]]
--- @include "common"

local max_count, max_tries = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_us()
local expired = redis.call('ZRANGE', K_LEASES, '-inf', math.floor(now / 1000), 'BYSCORE', 'LIMIT', 0, max_count)
local requeued, failed = 0, 0

for _, id in ipairs(expired) do
  redis.call('ZREM', K_LEASES, id)
  local rec = load_record(id)
  if rec then
    free_group(rec)
    rec.tries = (rec.tries or 0) + 1
    rec.lease = nil
    rec.modified_at = us_string(now)
    if rec.tries >= max_tries or queued_twin(rec) then
      rec.status = 'failed'
      release_hash(rec)
      failed = failed + 1
    else
      rec.status = 'queued'
      enqueue(rec)
      requeued = requeued + 1
    end
    save_record(rec, now, 'reap')
  end
end
if failed > 0 then
  count_bucket('fail', failed, now)
end
finish(now, false)
return {requeued, failed}
