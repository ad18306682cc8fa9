--[[
  Push tasks onto one queue partition: per task, dedup against queued twins, enforce maxsize,
  link the schedule, store, index and emit an event.

  Several pushes of one partition may come in one call (queue/pipeliner.py merges concurrent
  ones, push_many sends runs of them): each runs in turn, as if called alone, and sees the
  ones before it (a twin pushed earlier in the call is a queued twin). The clock, the limit
  rules version, the queue's size and the rates ring are read and written once per call; the
  k-th push's time is the call's start + k - 1 µs, so pushes of one call keep their order.

  KEYS: the queue's keys (redisched/queue/keys.py, all under one hash tag)
  ARGV[12k+1 .. 12k+12] the k-th push (k = 0, 1, ... up to 256 pushes):
  ARGV[1] record JSON (records.py), complete but for created_at, modified_at, rev, status
  ARGV[2] data JSON
  ARGV[3] maxsize (0 = unbounded); priority <= 1 always gets in
  ARGV[4] on a queued twin: "" refuse, "replace" replace it, or a combination of
          "updates" (data changed) and "priority" (priority changed), comma separated
  ARGV[5] "1" when this task links to a schedule
  ARGV[6] id for a new schedule, used when no schedule has this hash yet
  ARGV[7] "1": refuse while any twin is live (queued, dispatched or running), as the
          schedulers want; "0": only a queued twin refuses, as the API contract says
  ARGV[8] "1": one live task per schedule (REDISCHED_ONE_TASK_PER_SCHEDULE): a dispatched
          or running twin of the enabled schedule this push would link to refuses it
  ARGV[9] the limit rules version the push was made with ("" on a queue without limits)
  ARGV[10] for a task of a limited group (record field lg): its rule's key, ARGV[11] that
          rule's spec "<spacing ms>,<concurrency>"
  ARGV[12] "": the schedule mirror is this partition's K_SCHEDULES; else the push is away
          from its hash's partition (a limited task in its group's) and this is the mirror's
          entry there, "<schedule id>|<1|0>" or "-" for none; K_SCHEDULES is then not
          touched (the caller mirrors a schedule the push made)

  Returns: per push, in order: {record JSON, data JSON} as stored, or an error code
    E_CONFLICT when a twin is queued and the options do not allow the change (or is live
    and ARGV[7] is "1", or is a live task of the push's schedule and ARGV[8] is "1"),
    E_QUEUE_FULL, E_ID_EXISTS, E_STALE_RULES when the partition follows newer limit rules
    (the caller reads them and pushes again).
  Emits: per push, op=push rec=<record> data=<data> [sched=new|linked]
]]
--- @include "common"

local PUSH_ARGS, PUSHES_MAX = 12, 256
if #ARGV % PUSH_ARGS ~= 0 or #ARGV == 0 or #ARGV > PUSH_ARGS * PUSHES_MAX then
  return redis.error_reply('push: ARGV must be 1 .. 256 pushes of 12 arguments each')
end

local started = now_us()
-- Per call: the rules version the partition follows (false: none stored), the queued count,
-- the schedule mirror entries this call made (hash -> entry), written in one HSET at its end.
local followed_version, queued, made_mirrors, made_count = nil, nil, {}, 0
-- The push in hand: its arguments, record, data and time.
local A, rec, data, now

-- Boefje and normalizer payloads start with their task's id; what a twin shares is the rest.
local function without_id(json)
  return (string.gsub(json, '^{"id":"[%x-]+",', '{', 1))
end

local function twin_may_change(twin, twin_data)
  local twin_policy = A[4]
  if twin_policy == '' then
    return false
  end
  if string.find(twin_policy, 'replace', 1, true) then
    return true
  end
  local data_changed = without_id(twin_data) ~= without_id(data)
  local priority_changed = twin.priority ~= rec.priority
  return (data_changed and string.find(twin_policy, 'updates', 1, true) ~= nil)
    or (priority_changed and string.find(twin_policy, 'priority', 1, true) ~= nil)
end

-- A queued twin is updated in place: it keeps its id, created_at and schedule.
local function update_twin(twin_id)
  local twin, twin_data = load_record(twin_id), load_data(twin_id)
  if not twin_may_change(twin, twin_data) then
    return E_CONFLICT
  end
  dequeue(twin)
  if without_id(data) ~= data then
    twin_data = '{"id":"' .. twin.id .. '",' .. string.sub(without_id(data), 2)
  else
    twin_data = data
  end
  twin.priority, twin.pk, twin.ix, twin.modified_at = rec.priority, rec.pk, rec.ix, us_string(now)
  enqueue(twin)
  local raw = save_record(twin, now, 'push', twin_data)
  return {raw, twin_data}
end

local function mirror_entry()
  if A[12] == '' then
    return made_mirrors[rec.hash] or redis.call('HGET', K_SCHEDULES, rec.hash)
  end
  return A[12] ~= '-' and A[12]
end

local function link_schedule()
  if A[5] ~= '1' or not is_set(rec.hash) then
    return nil
  end
  local mirror = mirror_entry()
  if not mirror then
    if A[12] == '' then
      made_mirrors[rec.hash] = A[6] .. '|1'
      made_count = made_count + 1
    end
    rec.schedule_id = A[6]
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

-- A schedule's tasks share its hash, so its live task (if any) is the one the hash map
-- points at: one lookup, in the same partition as the mirror.
local function schedule_is_busy(twin)
  if A[8] ~= '1' or A[5] ~= '1' then
    return false
  end
  local mirror = mirror_entry()
  if not mirror then
    return false
  end
  local schedule_id, enabled = string.match(mirror, '^(.*)|(%d)$')
  return enabled == '1' and twin.schedule_id == schedule_id
end

-- The very task pushed again while it is queued (same id, same hash) is its own twin, as
-- mula finds twins by hash alone.
-- Also whether a live task has this id at all (what is left of it when its record was
-- moved aside is not one).
local function queued_self()
  local stored = load_record(rec.id)
  return stored ~= nil and stored.status == 'queued' and stored.hash == rec.hash, stored ~= nil
end

-- The partition follows the newest rules version any push or replace brought it: a push
-- made with older rules (another API process not told yet) is sent back to read them.
local function rules_are_stale()
  if A[9] == '' then
    return false
  end
  if followed_version == nil then
    followed_version = redis.call('HGET', K_LIMITS, NUL .. 'version')
  end
  local followed = tonumber(followed_version or '')  -- not a number (written by hand): followed by none
  if followed and followed > tonumber(A[9]) then
    return true
  end
  if followed_version ~= A[9] then
    redis.call('HSET', K_LIMITS, NUL .. 'version', A[9])
    followed_version = A[9]
  end
  return false
end

local function is_full()
  local maxsize = tonumber(A[3])
  if maxsize <= 0 or tonumber(rec.priority) <= 1 then
    return false
  end
  queued = queued or queued_count()
  return queued >= maxsize
end

local function push_one()
  if rules_are_stale() then
    return E_STALE_RULES
  end
  -- queued_twin(rec), with the live twin looked up once
  local live = live_twin(rec)
  local live_rec = live and load_record(live)
  local is_self, id_taken = queued_self()
  local twin_id = (live_rec and live_rec.status == 'queued' and live) or (is_self and rec.id)
  if twin_id then
    return update_twin(twin_id)
  end
  if live_rec and (A[7] == '1' or schedule_is_busy(live_rec)) then
    return E_CONFLICT
  end
  if is_full() then
    return E_QUEUE_FULL
  end
  if id_taken then
    return E_ID_EXISTS
  end

  local sched = link_schedule()
  if is_set(rec.lg) then
    note_group_rule(rec, A[10], A[11], now)
  end
  rec.status = 'queued'
  rec.created_at = us_string(now)
  rec.modified_at = rec.created_at
  enqueue(rec)
  if queued then
    queued = queued + 1
  end
  local raw
  if sched then
    raw = save_record(rec, now, 'push', data, 'sched', sched)
  else
    raw = save_record(rec, now, 'push', data)
  end
  return {raw, data}
end

local replies, pushed = {}, 0
for at = 1, #ARGV, PUSH_ARGS do
  A = {unpack(ARGV, at, at + PUSH_ARGS - 1)}
  rec, data, now = decode_record(A[1]), A[2], started + (at - 1) / PUSH_ARGS
  local reply = push_one()
  if type(reply) == 'table' then
    pushed = pushed + 1
  end
  replies[#replies + 1] = reply
end
if made_count > 0 then
  local fields = {}
  for hash, entry in pairs(made_mirrors) do
    fields[#fields + 1] = hash
    fields[#fields + 1] = entry
  end
  redis.call('HSET', K_SCHEDULES, unpack(fields))
end
if pushed > 0 then
  count_bucket('push', pushed, started)
  finish(now, true)
end
return replies
