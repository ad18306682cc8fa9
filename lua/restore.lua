--[[
  Put a live task back after Redis lost it (reconciliation from Postgres). A task Redis
  still has is left alone. Queued tasks go back on their queue (as long as no twin with the
  same hash is queued), dispatched and running ones get a fresh lease.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1] record JSON, as Postgres last saw it (with its rev)
  ARGV[2] lease length in ms for dispatched tasks
  ARGV[3] lease length in ms for running tasks

  Returns: 1 when restored, 0 when Redis already had the task or a twin is queued
]]
--- @include "common"

local rec = cjson.decode(ARGV[1])
if redis.call('HEXISTS', K_TASKS, rec.id) == 1 then
  return 0
end
local now = now_us()
if rec.status == 'queued' then
  if queued_twin(rec) then
    return 0
  end
  enqueue(rec)
elseif rec.status == 'dispatched' then
  set_lease(rec.id, now, tonumber(ARGV[2]))
elseif rec.status == 'running' then
  set_lease(rec.id, now, tonumber(ARGV[3]))
end
-- Keep revs ahead of what Postgres has, so later events win there.
if tonumber(redis.call('HGET', K_META, 'rev') or '0') < tonumber(rec.rev) then
  redis.call('HSET', K_META, 'rev', rec.rev)
end
redis.call('HSET', K_TASKS, rec.id, cjson.encode(rec))
return 1
