--[[
  Push a task onto its queue: dedup against queued twins, enforce maxsize, link the
  schedule, store, index and emit an event, in one step.

  KEYS: the queue's keys (redisched/queue/keys.py, all under one hash tag)
  ARGV[1] record JSON, complete but for created_at, modified_at, order, rev, status
  ARGV[2] priority key: 20-digit sortable priority (records.priority_key)
  ARGV[3] maxsize (0 = unbounded); priority <= 1 always gets in
  ARGV[4] on a queued twin: "" refuse, "replace" replace it, or a combination of
          "updates" (data changed) and "priority" (priority changed), comma separated
  ARGV[5] "1" when this queue's tasks link to schedules
  ARGV[6] id for a new schedule, used when no schedule has this hash yet

  Returns: the stored record JSON, or an error code
    E_CONFLICT when a twin is queued and the options do not allow the change,
    E_QUEUE_FULL, E_ID_EXISTS.
  Emits: op=push rec=<record> [sched=new|linked]
]]
--- @include "common"

local rec = cjson.decode(ARGV[1])
local priority_key, maxsize, twin_policy = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now = now_us()

-- Boefje and normalizer payloads start with their task's id; what a twin shares is the rest.
local function without_id(data)
  return (string.gsub(data, '^{"id":"[%x-]+",', '{', 1))
end

local function twin_may_change(twin)
  if twin_policy == '' then
    return false
  end
  if string.find(twin_policy, 'replace', 1, true) then
    return true
  end
  local data_changed = without_id(twin.data) ~= without_id(rec.data)
  local priority_changed = twin.priority ~= rec.priority
  return (data_changed and string.find(twin_policy, 'updates', 1, true) ~= nil)
    or (priority_changed and string.find(twin_policy, 'priority', 1, true) ~= nil)
end

-- A queued twin is updated in place: it keeps its id, created_at and schedule.
local function update_twin(twin_id)
  local twin = load_record(twin_id)
  if not twin_may_change(twin) then
    return E_CONFLICT
  end
  dequeue(twin)
  if without_id(rec.data) ~= rec.data then
    twin.data = '{"id":"' .. twin.id .. '",' .. string.sub(without_id(rec.data), 2)
  else
    twin.data = rec.data
  end
  twin.priority, twin.ix, twin.modified_at = rec.priority, rec.ix, us_string(now)
  twin.order = priority_key .. string.sub(twin.order, ORDER_PRIORITY_WIDTH + 1)
  enqueue(twin)
  local raw = save_record(twin, now, 'push')
  finish(now, true)
  return raw
end

local function link_schedule()
  if ARGV[5] ~= '1' or not is_set(rec.hash) then
    return nil
  end
  local mirror = redis.call('HGET', K_SCHEDULES, rec.hash)
  if not mirror then
    redis.call('HSET', K_SCHEDULES, rec.hash, ARGV[6] .. '|1')
    rec.schedule_id = ARGV[6]
    return 'new'
  end
  local schedule_id, enabled = string.match(mirror, '^(.*)|(%d)$')
  if enabled == '1' then
    rec.schedule_id = schedule_id
    return 'linked'
  end
  rec.schedule_id = cjson.null
  return nil
end

local twin_id = queued_twin(rec)
if twin_id then
  return update_twin(twin_id)
end
if maxsize > 0 and tonumber(rec.priority) > 1 and redis.call('ZCARD', K_QUEUE) >= maxsize then
  return E_QUEUE_FULL
end
if redis.call('HEXISTS', K_TASKS, rec.id) == 1 then
  return E_ID_EXISTS
end

local sched = link_schedule()
rec.status = 'queued'
rec.created_at = us_string(now)
rec.modified_at = rec.created_at
rec.order = priority_key .. rec.created_at .. rec.id
enqueue(rec)
local raw
if sched then
  raw = save_record(rec, now, 'push', 'sched', sched)
else
  raw = save_record(rec, now, 'push')
end
finish(now, true)
return raw
