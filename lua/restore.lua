--[[
  Put a live task back after Redis lost it (reconciliation from Postgres). Left alone: a
  task Redis still has, and a task whose rev this Redis handed out itself (at or after its
  birth, see common.lua): that task left on purpose, it finished meanwhile. Queued tasks go
  back on their queue (as long as no twin with the same hash is queued), dispatched and
  running ones get a fresh lease.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1] record JSON, as Postgres last saw it (with its rev)
  ARGV[2] data JSON
  ARGV[3] lease length in ms for dispatched tasks
  ARGV[4] lease length in ms for running tasks
  ARGV[5] for a task of a limited group (record field lg, as the rules in force put it, as
          push.lua's ARGV[10]): its rule's key, ARGV[6] that rule's spec; "" for none.
          A queued task waits in its group, a leased one counts against it again.

  Returns: 1 when restored, 0 when left alone
]]
--- @include "common"

local rec = decode_record(ARGV[1])
local rev = tonumber(rec.rev or '0')
if redis.call('HEXISTS', K_TASKS, rec.id) == 1 then
  return 0
end
local now = now_us()
mark_birth(now)
if rev >= tonumber(redis.call('HGET', K_META, 'born')) then
  return 0
end
if rec.status == 'queued' and queued_twin(rec) then
  return 0
end
if is_set(rec.lg) then
  note_group_rule(rec, ARGV[5], ARGV[6], now)
end
if rec.status == 'queued' then
  enqueue(rec)
elseif rec.status == 'dispatched' or rec.status == 'running' then
  hold_lease(rec, now, ARGV[3], ARGV[4])
end
-- Keep revs ahead of what Postgres has, so later events win there.
if tonumber(redis.call('HGET', K_META, 'rev') or '0') < rev then
  redis.call('HSET', K_META, 'rev', rec.rev)
end
redis.call('HSET', K_TASKS, rec.id, stored_form(rec))
redis.call('HSET', K_DATA, rec.id, ARGV[2])
return 1
