-- Shared helpers for the queue scripts. The loader prepends the key locals (K_QUEUE,
-- K_TASKS, K_DATA, K_HASHES, K_LEASES, K_EVENTS, K_META, K_SCHEDULES, K_DEDUPQ, K_RATES and the
-- IX table of index keys by name) generated from redisched/queue/keys.py, so positions never
-- drift, and the rates ring's RATE_BUCKET_US and RATE_SLOTS.

local NUL = '\0'
local ORDER_PRIORITY_WIDTH = 20

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function us_string(us)
  return string.format('%016d', us)
end

-- rev orders the versions of a task for the snapshotter: strictly increasing per queue and
-- never below the clock in µs, so it stays ahead of what Postgres has even after Redis lost
-- data. Kept as a decimal string: cjson would round a 16-digit number. The last rev handed
-- out is written back once per script, by finish(). The first script on an empty Redis also
-- records when this Redis was born: a rev at or above it was handed out here (restore.lua).
local last_rev = nil

local function mark_birth(now)
  redis.call('HSETNX', K_META, 'born', us_string(now))
end

local function next_rev(now)
  if last_rev == nil then
    local stored = redis.call('HGET', K_META, 'rev')
    if not stored then
      mark_birth(now)
    end
    last_rev = tonumber(stored or '0')
  end
  last_rev = math.max(last_rev + 1, now)
  return string.format('%d', last_rev)
end

-- Every script that saved a record ends here; `active` also moves the queue's last_activity.
local function finish(now, active)
  if last_rev ~= nil and active then
    redis.call('HSET', K_META, 'rev', string.format('%d', last_rev), 'last_activity', us_string(now))
  elseif last_rev ~= nil then
    redis.call('HSET', K_META, 'rev', string.format('%d', last_rev))
  elseif active then
    redis.call('HSET', K_META, 'last_activity', us_string(now))
  end
end

-- A record as stored: fields at their default are left out (records.py).
local function decode_record(raw)
  local rec = cjson.decode(raw)
  rec.ix = rec.ix or {}
  return rec
end

local function load_record(id)
  local raw = redis.call('HGET', K_TASKS, id)
  if raw then
    return decode_record(raw)
  end
  return nil
end

local function is_set(value)
  return value ~= nil and value ~= cjson.null
end

-- Stores the record under a new rev (and the data, when given: it changed) and appends
-- both to the event stream.
local function save_record(rec, now, op, data, ...)
  rec.rev = next_rev(now)
  local raw = cjson.encode(rec)
  redis.call('HSET', K_TASKS, rec.id, raw)
  if data then
    redis.call('HSET', K_DATA, rec.id, data)
    redis.call('XADD', K_EVENTS, '*', 'op', op, 'rec', raw, 'data', data, ...)
  else
    redis.call('XADD', K_EVENTS, '*', 'op', op, 'rec', raw, ...)
  end
  return raw
end

local function load_data(id)
  return redis.call('HGET', K_DATA, id)
end

-- The queue order key: priority key, created_at, id (see keys.py).
local function order_of(rec)
  return rec.pk .. rec.created_at .. rec.id
end

-- The dedup map (K_HASHES) points each hash at its newest live task: queued, dispatched or
-- running. A queued task is always the one its hash points at (pushes and requeues refuse a
-- queued twin), so "is a twin queued?" is one lookup and a status check.
local function claim_hash(rec)
  if is_set(rec.hash) then
    redis.call('HSET', K_HASHES, rec.hash, rec.id)
  end
end

local function release_hash(rec)
  if is_set(rec.hash) and redis.call('HGET', K_HASHES, rec.hash) == rec.id then
    redis.call('HDEL', K_HASHES, rec.hash)
  end
end

local function live_twin(rec)
  if not is_set(rec.hash) then
    return nil
  end
  local twin = redis.call('HGET', K_HASHES, rec.hash)
  if twin and twin ~= rec.id and redis.call('HEXISTS', K_TASKS, twin) == 1 then
    return twin
  end
  return nil
end

local function queued_twin(rec)
  local twin = live_twin(rec)
  if twin and load_record(twin).status == 'queued' then
    return twin
  end
  return nil
end

-- A task that holds a lease claims its hash unless another live twin has it.
local function claim_hash_if_free(rec)
  if not live_twin(rec) then
    claim_hash(rec)
  end
end

-- Puts a task on its queue: the queue itself, its secondary indexes and the dedup map.
local function enqueue(rec)
  local order = order_of(rec)
  redis.call('ZADD', K_QUEUE, 0, order)
  for name, value in pairs(rec.ix) do
    redis.call('ZADD', IX[name], 0, value .. NUL .. order)
  end
  if rec.ix.dedup then
    redis.call('ZADD', K_DEDUPQ, 0, order)
  end
  claim_hash(rec)
end

-- Takes a task off its queue; it stays live (and keeps its hash) until it finishes.
local function dequeue(rec)
  local order = order_of(rec)
  redis.call('ZREM', K_QUEUE, order)
  for name, value in pairs(rec.ix) do
    redis.call('ZREM', IX[name], value .. NUL .. order)
  end
  if rec.ix.dedup then
    redis.call('ZREM', K_DEDUPQ, order)
  end
end

-- Adds n to this 10-second bucket's count of `op` (push, pop, fail) in the rates ring
-- (keys.py): slot = bucket mod RATE_SLOTS holds "<bucket>:<count>", so a slot left from an
-- older lap starts over. Bounded by construction: RATE_SLOTS fields per op, never trimmed.
local function count_bucket(op, n, now)
  local bucket = math.floor(now / RATE_BUCKET_US)
  local field = op .. ':' .. (bucket % RATE_SLOTS)
  local at, count = string.match(redis.call('HGET', K_RATES, field) or '', '^(%d+):(%d+)$')
  if tonumber(at) ~= bucket then
    count = 0
  end
  redis.call('HSET', K_RATES, field, bucket .. ':' .. (tonumber(count) + n))
end

local function set_lease(id, now, lease_ms)
  redis.call('ZADD', K_LEASES, math.floor(now / 1000) + lease_ms, id)
end

-- The error codes E_CONFLICT, E_QUEUE_FULL, E_ID_EXISTS, E_NOT_FOUND, E_STALE_LEASE are
-- locals of the generated preamble, from redisched/errors.py's ScriptError.
