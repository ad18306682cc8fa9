-- Shared helpers for the queue scripts. The loader prepends the key locals (K_QUEUE,
-- K_TASKS, K_DATA, K_HASHES, K_LEASES, K_EVENTS, K_META, K_SCHEDULES, K_DEDUPQ, K_RATES, K_LIMQ, K_LIMITS, K_LIMWAKE and the
-- IX table of index keys by name) generated from redisched/queue/keys.py, so positions never
-- drift, and the rates ring's RATE_BUCKET_US and RATE_SLOTS.
-- This code runs once per library load (queue/scripts.py), not per call: a local here that
-- a call changes keeps its value into the next call unless per_call resets it.

--- @include "fair_index"

local NUL = '\0'
local ORDER_PRIORITY_WIDTH = 20

-- The clock, read anew (the scan's time limit, limit groups' spacing: common.lua, below).
local function clock_us()
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

-- Once the pair index is ready (K_META pairs, below), the boefje and image indexes are not
-- kept: the pair index serves a filter on either alone too (candidates.lua, pair_ranges).
local IX_IN_PAIRS = {boefje = true, image = true}
local pairs_state, stored_rev = nil, nil  -- stored_rev: K_META rev as read with it (false: none)
-- K_META orders = "packed" once no member holds an earlier version's text order key
-- (index_orders.lua); read with the pair index's state.
local orders_state = nil
-- The call's time: the clock when the call first asks (one TIME a call; the work of one call
-- is one instant, as Redis runs it atomically). pop_follows: pop_next's patches are followed
-- by its pop, which reads K_META with them and writes it once for all (finish).
-- K_HEADS as the pop's search read it (candidates.lua, pair_ranges) and as the call wrote it
-- since: heads_known (pair -> head, false: none; the HGETALL of a one-list filter: heads_all)
-- over heads_read, the HMGET's reply for the pairs heads_names[heads_from ..], kept as read
-- and looked up in turn (a table of its 16 pairs cost more than the HGET it saves).
local call_now, pop_follows, heads_known, heads_all, heads_read, heads_names, heads_from = nil, false, nil, false, nil, nil, 0
per_call(function()
  last_rev, pairs_state, stored_rev, orders_state, call_now, pop_follows = nil, nil, nil, nil, nil, false
  heads_known, heads_all, heads_read, heads_names = nil, false, nil, nil
end)

local function now_us()
  if call_now == nil then
    call_now = clock_us()
  end
  return call_now
end

local function mark_birth(now)
  if redis.call('HSETNX', K_META, 'born', us_string(now)) == 1 then
    -- no task here was placed without the pair index, nor under a text order key
    redis.call('HSET', K_META, 'pairs', 'ready', 'orders', 'packed')
    pairs_state, orders_state = true, true
  end
end

-- Read once per call, with the rev (next_rev needs it too: one read of K_META). A partition
-- no script has written to yet has its pair index ready; it is born by the call's first
-- rev (next_rev, with the call's start time): a birth read off the clock here, later in
-- the call, would lie above that rev and make restore.lua take the task for its own.
local function read_states()
  local v = redis.call('HMGET', K_META, 'pairs', 'born', 'rev', 'orders')
  pairs_state, stored_rev, orders_state = v[1] == 'ready' or not v[2], v[3], v[4] == 'packed' or not v[2]
end

local function pairs_ready()
  if pairs_state == nil then
    read_states()
  end
  return pairs_state
end

local function orders_packed()
  if orders_state == nil then
    read_states()
  end
  return orders_state
end

local function next_rev(now)
  if last_rev == nil then
    local stored = stored_rev
    if stored == nil and pop_follows then
      pairs_ready()  -- the pop reads the rest: one read
      stored = stored_rev
    elseif stored == nil then
      stored = redis.call('HGET', K_META, 'rev')
    end
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
  if pop_follows then
    return
  end
  if last_rev ~= nil and active then
    redis.call('HSET', K_META, 'rev', string.format('%d', last_rev), 'last_activity', us_string(now))
  elseif last_rev ~= nil then
    redis.call('HSET', K_META, 'rev', string.format('%d', last_rev))
  elseif active then
    redis.call('HSET', K_META, 'last_activity', us_string(now))
  end
end

-- cjson's output with '\/' written '/': found as plain text (string.gsub's pattern matcher
-- tries every byte of the record: 7% of a pop).
local function unescape_slashes(raw)
  local at = string.find(raw, '\\/', 1, true)
  if not at then
    return raw
  end
  local parts, from = {}, 1
  while at do
    parts[#parts + 1] = string.sub(raw, from, at - 1)
    from = at + 1
    at = string.find(raw, '\\/', at + 2, true)
  end
  parts[#parts + 1] = string.sub(raw, from)
  return table.concat(parts)
end

-- A record from the caller (records.py encodes it in full).
local function decode_record(raw)
  local rec = cjson.decode(raw)
  rec.ix = rec.ix or {}
  return rec
end

local function is_set(value)
  return value ~= nil and value ~= cjson.null
end

-- What records.py's TaskRecord requires: a record that lacks a field or holds the wrong type
-- would break the scripts (or the API decoding it) on every call that meets it. Spelt out,
-- not looped over a table of fields: pairs() and type() per field were half of a load.
local RECORD_STATUSES = {
  pending = true, queued = true, dispatched = true, running = true, completed = true, failed = true, cancelled = true,
}
local UUID_PATTERN = '^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$'

-- The first field of the wrong type and the type it should have, or nil.
local function mistyped_field(rec)
  local null = cjson.null
  local id, organisation, priority, status = rec.id, rec.organisation, rec.priority, rec.status
  local created_at, modified_at, pk = rec.created_at, rec.modified_at, rec.pk
  if type(id) ~= 'string' then return 'id', 'string' end
  if type(organisation) ~= 'string' then return 'organisation', 'string' end
  if type(priority) ~= 'string' then return 'priority', 'string' end
  if type(status) ~= 'string' then return 'status', 'string' end
  if type(created_at) ~= 'string' then return 'created_at', 'string' end
  if type(modified_at) ~= 'string' then return 'modified_at', 'string' end
  if type(pk) ~= 'string' then return 'pk', 'string' end
  local v = rec.scheduler_id
  if v ~= nil and v ~= null and type(v) ~= 'string' then return 'scheduler_id', 'string' end
  -- type, rev, tries and lc may be absent, not null: records.py refuses null for them, so a
  -- script would hand out a task its caller cannot read
  v = rec.type
  if v ~= nil and type(v) ~= 'string' then return 'type', 'string' end
  v = rec.schedule_id
  if v ~= nil and v ~= null and type(v) ~= 'string' then return 'schedule_id', 'string' end
  v = rec.hash
  if v ~= nil and v ~= null and type(v) ~= 'string' then return 'hash', 'string' end
  v = rec.lease
  if v ~= nil and v ~= null and type(v) ~= 'string' then return 'lease', 'string' end
  v = rec.rev
  if v ~= nil and type(v) ~= 'string' then return 'rev', 'string' end
  v = rec.tries
  if v ~= nil and (type(v) ~= 'number' or v ~= math.floor(v)) then return 'tries', 'integer' end
  v = rec.lc
  if v ~= nil and (type(v) ~= 'number' or v ~= math.floor(v)) then return 'lc', 'integer' end
  -- the group and its object go into key members: a table there fails the script
  v = rec.lg
  if v ~= nil and v ~= null and type(v) ~= 'string' then return 'lg', 'string' end
  v = rec.lo
  if v ~= nil and v ~= null and type(v) ~= 'string' then return 'lo', 'string' end
  v = rec.ix
  if v ~= nil and v ~= null and type(v) ~= 'table' then return 'ix', 'table' end
  return nil
end

local function record_problem(rec, id, id_canonical)
  if type(rec) ~= 'table' then
    return 'not a JSON object'
  end
  local name, kind = mistyped_field(rec)
  if name then
    return 'field ' .. name .. ' is not a ' .. kind
  end
  if rec.id ~= id then
    return 'its id is not its key'
  end
  -- an id in upper case (none is: str(uuid)) would pack to one its key is not (order_of);
  -- `id_canonical`: read off a packed order key, which holds no other (load_named)
  if not (id_canonical or (string.find(id, UUID_PATTERN) and string.lower(id) == id))
      or (is_set(rec.schedule_id) and not string.find(rec.schedule_id, UUID_PATTERN)) then
    return 'an id is not a UUID'
  end
  if not RECORD_STATUSES[rec.status] then
    return 'unknown status'
  end
  if not string.find(rec.priority, '^%-?%d+$') or not string.find(rec.modified_at, '^%-?%d+$') then
    return 'a number is malformed'
  end
  if not string.find(rec.created_at, '^[%d:%-]%d+$') then
    return 'created_at is malformed'
  end
  if #rec.pk ~= ORDER_PRIORITY_WIDTH then
    return 'its priority key is malformed'
  end
  if type(rec.ix) ~= 'table' then
    return 'its index values are malformed'
  end
  for name, value in pairs(rec.ix) do
    if IX[name] == nil or type(value) ~= 'string' then
      return 'its index values are malformed'
    end
  end
  return nil
end

-- The stored record (records.py, STORED_NAMES): short field names, and left out what the
-- key, the queue and the other fields give: id (its field in K_TASKS), scheduler_id (the
-- queue's id), type when it is the queue's id, pk (the priority's key), modified_at when it
-- equals created_at, rev when it equals modified_at (a queued task), ix.org when it equals
-- organisation (always: indexes.py); '/' is not escaped. A queued boefje task's record is
-- ~210 B of JSON: jemalloc's 224-byte class, not the 384-byte one of the full form.
-- Events and replies carry the event form: the stored one with i (the id) and q (the queue)
-- put in front. A record with "id" is in the full form earlier versions wrote (readable_record
-- reads it the same); one that mixes the two forms' names is moved aside, not read either way.
local stored_form, event_form, readable_record, priority_key
do
  -- The short form's own names (written out: a library's load may not call pairs).
  local SHORT_ONLY = {
    i = true, q = true, t = true, sc = true, o = true, p = true, s = true, h = true, c = true, m = true, r = true,
    x = true, l = true, n = true,
  }

  -- The queue's id: the tag of "<p>:{<tag>}:queue", "<id>" or, for partition i of N > 1,
  -- "<id>.<i>.<j>" (keys.py; queue ids are the scheduler ids, without dots).
  -- Matched once per queue key while the library is loaded (a pattern match is a few thousand
  -- instructions, more than the rest of a call's record work), at most 64 kept.
  local QUEUE_OF_KEY, QUEUE_FIELD_OF_KEY, queue_keys_known = {}, {}, 0
  local function queue_id()
    local id = QUEUE_OF_KEY[K_QUEUE]
    if not id then
      local tag = string.match(K_QUEUE, '{([^{}]*)}:queue$') or ''
      id = string.match(tag, '^(.-)%.%d+%.%d+$') or tag
      if queue_keys_known >= 64 then
        QUEUE_OF_KEY, QUEUE_FIELD_OF_KEY, queue_keys_known = {}, {}, 0
      end
      QUEUE_OF_KEY[K_QUEUE], QUEUE_FIELD_OF_KEY[K_QUEUE] = id, ',"q":' .. cjson.encode(id) .. ','
      queue_keys_known = queue_keys_known + 1
    end
    return id
  end

  -- records.py priority_key: priority + 2^63 in 20 digits, as two halves of 10 digits (a
  -- double holds neither 2^63 nor every 19-digit priority exactly); nil when past int64.
  -- A priority that is no decimal integer may get a key: record_problem refuses it after.
  function priority_key(priority)
    local high, low
    if #priority <= 15 then  -- exact in a double, and so is its sum with 2^63's low half
      local number = tonumber(priority)
      if not number then
        return nil
      end
      local sum = number + 6854775808
      high = math.floor(sum / 1e10)
      high, low = 922337203 + high, sum - high * 1e10
    else
      local sign, digits = string.match(priority, '^(%-?)0*(%d+)$')
      if not digits or #digits > 19 then
        return nil
      end
      high, low = tonumber(string.sub(digits, 1, -11)) or 0, tonumber(string.sub(digits, -10))
      if sign == '-' then
        high, low = 922337203 - high, 6854775808 - low
      else
        high, low = 922337203 + high, 6854775808 + low
      end
      if low < 0 then
        high, low = high - 1, low + 1e10
      elseif low >= 1e10 then
        high, low = high + 1, low - 1e10
      end
      if high < 0 or high > 1844674407 or (high == 1844674407 and low > 3709551615) then
        return nil
      end
    end
    return string.format('%010d%010d', high, low)
  end

  function stored_form(rec)
    local null, org, ix = cjson.null, rec.ix.org, rec.ix
    if org == rec.organisation then
      ix.org = nil
    end
    local has_ix = next(ix) ~= nil or org ~= rec.organisation
    -- one constructor (sized once; sets after it would grow the table twice); null (a patch's,
    -- a push without a schedule) and defaults are left out
    local out = {
      o = rec.organisation, p = rec.priority, s = rec.status, c = rec.created_at,
      h = rec.hash ~= null and rec.hash or nil,
      sc = rec.schedule_id ~= null and rec.schedule_id or nil,
      x = has_ix and ix or nil,
      m = rec.modified_at ~= rec.created_at and rec.modified_at or nil,
      r = rec.rev ~= rec.modified_at and rec.rev or nil,
      l = rec.lease ~= null and rec.lease or nil,
      n = rec.tries ~= 0 and rec.tries or nil,
      t = rec.type ~= queue_id() and rec.type or nil,
      lg = rec.lg, lc = rec.lc, lo = rec.lo,
    }
    local raw = cjson.encode(out)
    ix.org = org
    -- A backslash before '/' in cjson's output always escapes that '/': a backslash that is
    -- itself escaped is followed by the escape of the next character, and '/' is always escaped.
    return unescape_slashes(raw)
  end

  -- Ids are UUIDs (commands.py, _identity; record_problem): nothing in them to escape.
  function event_form(rec, raw)
    queue_id()
    return '{"i":"' .. rec.id .. '"' .. QUEUE_FIELD_OF_KEY[K_QUEUE] .. string.sub(raw, 2)
  end

  local function mixes(stored, names)
    for name in pairs(names) do
      if stored[name] ~= nil then
        return true
      end
    end
    return false
  end

  -- Whether a record without "id" holds a name of the full form (on every load: spelt out).
  local function holds_full_names(s)
    return s.id ~= nil or s.scheduler_id ~= nil or s.type ~= nil or s.schedule_id ~= nil or s.organisation ~= nil
      or s.priority ~= nil or s.status ~= nil or s.hash ~= nil or s.created_at ~= nil or s.modified_at ~= nil
      or s.rev ~= nil or s.ix ~= nil or s.lease ~= nil or s.tries ~= nil or s.pk ~= nil
  end

  -- The record in the full form the scripts work on (long names, every derived field put
  -- back), or nil and what is wrong with it (nothing, without a look, when `sound`: a record
  -- vouched for, load_record; `id_canonical`: record_problem's).
  function readable_record(stored, id, sound, id_canonical)
    if type(stored) ~= 'table' then
      return nil, 'not a JSON object'
    end
    local rec = stored
    if stored.id ~= nil then
      if mixes(stored, SHORT_ONLY) then
        return nil, 'it mixes the full and the short record form'
      end
      if type(stored.scheduler_id) ~= 'string' or type(stored.type) ~= 'string' then
        return nil, 'field scheduler_id or type is not a string'
      end
      -- it is placed by its stored pk but saved without it (the next load derives it)
      if type(stored.priority) == 'string' and stored.pk ~= priority_key(stored.priority) then
        return nil, "its priority key is not its priority's"
      end
      if stored.ix == nil then
        stored.ix = {}
      end
    else
      if holds_full_names(stored) then
        return nil, 'it mixes the full and the short record form'
      end
      if type(stored.p) ~= 'string' then
        return nil, 'field priority is not a string'
      end
      if stored.q ~= nil and stored.q ~= queue_id() then  -- the event form's, written in by hand
        return nil, "its queue is not its key's"
      end
      -- only the fields it holds: a constructor naming absent ones would size the table for
      -- them all (Lua 5.1 keeps a slot for each nil set)
      rec = {
        id = stored.i or id, organisation = stored.o, priority = stored.p, status = stored.s, created_at = stored.c,
        modified_at = stored.m, rev = stored.r, ix = stored.x or {}, pk = priority_key(stored.p),
      }
      if stored.h ~= nil then
        rec.hash = stored.h
      end
      if stored.sc ~= nil then
        rec.schedule_id = stored.sc
      end
      if stored.l ~= nil then
        rec.lease = stored.l
      end
      if stored.n ~= nil then
        rec.tries = stored.n
      end
      if stored.t ~= nil then
        rec.type = stored.t
      end
      if stored.q ~= nil then
        rec.scheduler_id = stored.q
      end
      if stored.lg ~= nil then
        rec.lg, rec.lc, rec.lo = stored.lg, stored.lc, stored.lo
      end
      if not rec.pk then
        return nil, 'a number is malformed'
      end
    end
    -- ix.org is the organisation in every record pushes, patches and restores write
    -- (indexes.py), so one without it is in the organisation's index.
    if type(rec.ix) == 'table' and rec.ix.org == nil and type(rec.organisation) == 'string' then
      rec.ix.org = rec.organisation
    end
    if rec.modified_at == nil then
      rec.modified_at = rec.created_at
    end
    if rec.rev == nil then
      rec.rev = rec.modified_at
    end
    if sound then
      return rec, nil
    end
    return rec, record_problem(rec, id, id_canonical)
  end
end

-- The (boefje id, image) pair index answers the runners' filter, boefje in B and image in I,
-- directly: K_PAIRS holds "<pair>\0<order key>" per placed task with a boefje id, K_HEADS
-- maps each pair to the order key of its best placed task, so a pop reads the heads of
-- every pair of B x I in one HMGET and walks only the pairs that have tasks (candidates.lua):
-- a plugin whose image the runner lacks costs it nothing. pair = "<#boefje>:<boefje>", then
-- "=<image>" when the task has an image (unambiguous for any index values).
-- K_META pairs = "ready" once every placed task is in it (born so, or index_pairs.lua);
-- from then on the boefje and image indexes are gone (IX_IN_PAIRS).
local function pair_name(boefje, image)
  return #boefje .. ':' .. boefje .. (image and ('=' .. image) or '')
end

local function pair_of(rec)
  return rec.ix.boefje and pair_name(rec.ix.boefje, rec.ix.image)
end

-- The pair's head as this call knows it without a read (false: none), or nil.
local function known_head(pair)
  local head = heads_known and heads_known[pair]
  if head == nil and heads_read then
    for i = 1, #heads_read do
      if heads_names[heads_from + i - 1] == pair then
        return heads_read[i]
      end
    end
  end
  if head == nil and heads_all then
    return false
  end
  return head
end

local function set_head(pair, head)
  if head then
    redis.call('HSET', K_HEADS, pair, head)
  else
    redis.call('HDEL', K_HEADS, pair)
  end
  if heads_known or heads_read then
    heads_known = heads_known or {}
    heads_known[pair] = head
  end
end


local function place_pair(rec, order)
  local pair = pair_of(rec)
  if pair then
    redis.call('ZADD', K_PAIRS, '0', pair .. NUL .. order)
    local head = known_head(pair)
    if head == nil then
      head = redis.call('HGET', K_HEADS, pair)
    end
    if not head or order < head then
      set_head(pair, order)
    end
  end
end

-- A member of K_PAIRS is gone (unplaced, or removed as a stray): when it was its pair's head
-- (K_HEADS: the best member), the best left is now. A head the call does not know is not
-- read: the member was the head when it was below every member left (one ZRANGE either way).
local function pair_member_gone(pair, order)
  local head = known_head(pair)
  if head ~= nil and head ~= order then
    return
  end
  local best = redis.call('ZRANGE', K_PAIRS, '[' .. pair .. NUL, '(' .. pair .. '\1', 'BYLEX', 'LIMIT', '0', '1')[1]
  best = best and string.sub(best, #pair + 2)
  if head ~= nil or not best or order < best then
    set_head(pair, best or false)
  end
end

local function unplace_pair(rec, order)
  local pair = pair_of(rec)
  if pair and redis.call('ZREM', K_PAIRS, pair .. NUL .. order) == 1 then
    pair_member_gone(pair, order)
  end
end

-- Healing: what a script meets that names no live task, or a record that does not decode,
-- is moved aside so the queue goes on: a record to K_QUARANTINE (id -> {reason, record,
-- data}), a stray member out of its sorted set; counted in meta (quarantined,
-- stray_members, read by /metrics) and logged to the Redis log. Read-only functions (peek)
-- may not write: they pass over what they meet, and the next pop moves it aside.
local stray_logged = false

-- A task moved aside while it counted against its limit group (lc) gives its slot back, or
-- the group would stay at its cap with none of its tasks out: its count goes down and the
-- group is due in K_LIMWAKE, so the next pop reopens it (refresh_group is defined below).
local function free_slot_of_moved_aside(raw)
  local ok, rec = pcall(cjson.decode, raw)
  if not (ok and type(rec) == 'table' and type(rec.lg) == 'string' and rec.lc) then
    return
  end
  local n = redis.pcall('HINCRBY', K_LIMITS, rec.lg .. NUL .. 'n', -1)
  if type(n) == 'table' or n <= 0 then
    redis.call('HDEL', K_LIMITS, rec.lg .. NUL .. 'n')
  end
  redis.call('ZADD', K_LIMWAKE, 0, rec.lg)
end

local function quarantine_record(id, raw, reason)
  if not SCRIPT_WRITES then
    return
  end
  free_slot_of_moved_aside(raw)
  local data = redis.call('HGET', K_DATA, id)
  redis.call('HSET', K_QUARANTINE, id, cjson.encode({reason = reason, record = raw, data = data or cjson.null}))
  redis.call('HDEL', K_TASKS, id)
  redis.call('HDEL', K_DATA, id)
  redis.call('ZREM', K_LEASES, id)
  redis.call('HINCRBY', K_META, 'quarantined', 1)
  redis.log(redis.LOG_WARNING, 'redisched: task ' .. id .. ' of ' .. K_TASKS .. ' moved to ' .. K_QUARANTINE .. ': ' .. reason)
end

-- Stray members are removed in batches, one ZREM per set, when the scan ends (flush_strays).
local strays, stray_count = {}, 0
per_call(function() strays, stray_count, stray_logged = {}, 0, false end)

local function drop_stray_member(key, member)
  if not SCRIPT_WRITES then
    return
  end
  local list = strays[key]
  if not list then
    list = {}
    strays[key] = list
  end
  list[#list + 1] = member
  stray_count = stray_count + 1
end

local function flush_strays()
  if stray_count == 0 then
    return
  end
  -- counted by what ZREM removed: a member this call already took out (a task it dispatched,
  -- still in a fetched batch) is no stray
  local removed = 0
  for key, members in pairs(strays) do
    for i = 1, #members, 1000 do
      removed = removed + redis.call('ZREM', key, unpack(members, i, math.min(i + 999, #members)))
    end
    if key == K_PAIRS then
      for _, member in ipairs(members) do
        local at = string.find(member, NUL, 1, true)
        pair_member_gone(string.sub(member, 1, at - 1), string.sub(member, at + 1))
      end
    end
  end
  if removed > 0 then
    redis.call('HINCRBY', K_META, 'stray_members', removed)
    if not stray_logged then
      stray_logged = true
      redis.log(redis.LOG_WARNING, 'redisched: removed ' .. removed .. ' members naming no live queued task from ' .. K_QUEUE .. ' and its indexes')
    end
  end
  strays, stray_count = {}, 0
end

-- Stored records known to be sound: stored JSON -> the id it was saved under. A pop, and a
-- patch of the status alone (a runner's "running", "completed"), save the record they loaded
-- (and so checked) with only fields they set themselves changed (status, lease, modified_at,
-- rev, the limit group's lc), so when that JSON is loaded again under that id (by the
-- runner's next patch) record_problem, 8% of a finished task's Redis time, would find
-- nothing. Any other JSON (written by hand, changed since) is checked in full. Kept across
-- calls, as what it answers depends on the JSON and the id alone; at most VOUCHED_MAX
-- entries, dropped together when full.
local VOUCHED_MAX = 1024
local vouched, vouched_count = {}, 0

local function vouch_for(stored_raw, id)
  if vouched_count >= VOUCHED_MAX then
    vouched, vouched_count = {}, 0
  end
  vouched[stored_raw], vouched_count = id, vouched_count + 1
end

-- The live task's record, or nil: none, or one moved aside because it is corrupt.
-- `id_canonical`: the id is known to be a lower-case UUID (load_named).
local function load_record(id, id_canonical)
  local raw = redis.call('HGET', K_TASKS, id)
  if not raw then
    return nil
  end
  local ok, stored = pcall(cjson.decode, raw)
  local rec, problem = nil, 'not JSON'
  if ok then
    rec, problem = readable_record(stored, id, vouched[raw] == id, id_canonical)
  end
  if problem then
    quarantine_record(id, raw, problem)
    return nil
  end
  return rec
end

-- The task's data for a reply, or nil (the task moved aside) when it is missing or not JSON:
-- the API hands it out as it is.
local function checked_data(rec)
  local data = redis.call('HGET', K_DATA, rec.id)
  if data and pcall(cjson.decode, data) then
    return data
  end
  quarantine_record(rec.id, cjson.encode(rec), data and 'its data is not JSON' or 'it has no data')
  return nil
end


-- Stores the record under a new rev (and the data, when given: it changed) and appends
-- both to the event stream; returns the record in the event form, as replies carry it, and
-- in the stored form.
local function save_record(rec, now, op, data, ...)
  rec.rev = next_rev(now)
  local raw = stored_form(rec)
  redis.call('HSET', K_TASKS, rec.id, raw)
  local event_raw = event_form(rec, raw)
  if data then
    redis.call('HSET', K_DATA, rec.id, data)
    redis.call('XADD', K_EVENTS, '*', 'op', op, 'rec', event_raw, 'data', data, ...)
  else
    redis.call('XADD', K_EVENTS, '*', 'op', op, 'rec', event_raw, ...)
  end
  return event_raw, raw
end

local function load_data(id)
  return redis.call('HGET', K_DATA, id)
end

-- The queue order key (keys.py, records.py order_key), 35 B: the 20-digit priority key and
-- created_at + 10^17 in 18 digits (µs: years 1 to 9999) as base-100 digits, a byte per two
-- decimal ones (10 and 9 bytes; 8 and 8 in binary cost Lua ~40% more: a double holds neither
-- number exactly, so each takes two halves), then the id's 16 bytes. Byte order is queue order; its first byte is below '0'. An earlier version's members
-- hold the text form (text_order_of: 72 to 75 B, each from '0' on) until the start-up
-- migration (index_orders.lua) has moved them: meanwhile every script reads both (order_id,
-- order_names) and takes a task off under either (unplace, dequeue).
local PACKED_ORDER_LENGTH = 35
local order_of, order_id, order_names_loaded
do
  -- Made by the first call (a library's load may not reach string): byte -> 16 x its hex
  -- digit's value, byte -> that value (0 for any other byte: an id that is no lower-case
  -- UUID, refused by record_problem, packs to something, never fails the script), byte ->
  -- its two hex digits.
  local HEX_HIGH, HEX_LOW, HEX_OF_BYTE, DIGITS_OF_BYTE = nil, nil, nil, nil
  local function make_tables()
    HEX_HIGH, HEX_LOW, HEX_OF_BYTE, DIGITS_OF_BYTE = {}, {}, {}, {}
    for c = 1, 255 do
      HEX_HIGH[c], HEX_LOW[c] = 0, 0
    end
    for value = 0, 15 do
      local c = string.byte(string.format('%x', value))
      HEX_HIGH[c], HEX_LOW[c] = value * 16, value
    end
    for b = 0, 255 do
      HEX_OF_BYTE[b], DIGITS_OF_BYTE[b] = string.format('%02x', b), b < 100 and string.format('%02d', b) or '--'
    end
  end

  -- Two decimal digits (bytes) as one byte; % 256: a byte that is no digit (written by hand)
  -- packs to something, never fails the script.
  local function digit_pair(high, low)
    return (high * 10 + low - 528) % 256
  end

  -- created_at (records.py order_time: 16 digits of µs, "-" and 17 digits of µs + 10^17,
  -- ":" and 18 digits of µs) + 10^17 in 18 digits, for the forms other than 16 digits.
  local function time_digits(created_at)
    local mark, digits = string.byte(created_at, 1), string.sub(created_at, 2)
    if mark == 45 then
      digits = '0' .. digits
    elseif mark == 58 then  -- below 9 * 10^17: its first digit goes up by one
      digits = string.char(string.byte(digits, 1) + 1) .. string.sub(digits, 2)
    else
      digits = '10' .. created_at
    end
    if #digits ~= 18 then  -- not as records.py writes it: packed all the same
      digits = string.sub(string.rep('0', 18) .. digits, -18)
    end
    return digits
  end

  local function base100(digits)
    local out = {}
    for i = 1, #digits, 2 do
      out[#out + 1] = digit_pair(string.byte(digits, i, i + 1))
    end
    return string.char(unpack(out))
  end

  -- The priority key and created_at, packed (the first 19 bytes of the order key).
  local function order_prefix(rec)
    local pk, created_at = rec.pk, rec.created_at
    local mark = string.byte(created_at, 1)
    if #pk ~= 20 or #created_at ~= 16 or mark == 45 or mark == 58 then
      -- a pk record_problem refuses, or created_at before 1970 or after 2286: packed all the same
      return base100(string.sub(string.rep('0', 20) .. pk, -20)) .. base100(time_digits(created_at))
    end
    -- 1970 to 2286, every task's key: digit_pair written out, as this runs for every key
    -- packed; the 10 is the leading "10" time_digits puts before 16 digits
    local p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14, p15, p16, p17, p18, p19, p20 = string.byte(pk, 1, 20)
    local c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16 = string.byte(created_at, 1, 16)
    return string.char((p1 * 10 + p2 - 528) % 256, (p3 * 10 + p4 - 528) % 256, (p5 * 10 + p6 - 528) % 256,
      (p7 * 10 + p8 - 528) % 256, (p9 * 10 + p10 - 528) % 256, (p11 * 10 + p12 - 528) % 256,
      (p13 * 10 + p14 - 528) % 256, (p15 * 10 + p16 - 528) % 256, (p17 * 10 + p18 - 528) % 256,
      (p19 * 10 + p20 - 528) % 256, 10, (c1 * 10 + c2 - 528) % 256, (c3 * 10 + c4 - 528) % 256,
      (c5 * 10 + c6 - 528) % 256, (c7 * 10 + c8 - 528) % 256, (c9 * 10 + c10 - 528) % 256,
      (c11 * 10 + c12 - 528) % 256, (c13 * 10 + c14 - 528) % 256, (c15 * 10 + c16 - 528) % 256)
  end

  local function id_bytes(id)
    if not HEX_HIGH then
      make_tables()
    end
    local h, l = HEX_HIGH, HEX_LOW
    local c1, c2, c3, c4, c5, c6, c7, c8, _, c10, c11, c12, c13, _, c15, c16, c17, c18, _, c20, c21, c22, c23, _,
      c25, c26, c27, c28, c29, c30, c31, c32, c33, c34, c35, c36 = string.byte(id, 1, 36)
    return string.char(h[c1] + l[c2], h[c3] + l[c4], h[c5] + l[c6], h[c7] + l[c8], h[c10] + l[c11], h[c12] + l[c13],
      h[c15] + l[c16], h[c17] + l[c18], h[c20] + l[c21], h[c22] + l[c23], h[c25] + l[c26], h[c27] + l[c28],
      h[c29] + l[c30], h[c31] + l[c32], h[c33] + l[c34], h[c35] + l[c36])
  end

  -- The last record packed and its key: a task's key is wanted several times a call (met,
  -- taken off, its group's waiting set), each costing ~20k instructions.
  local known_rec, known_pk, known_created_at, known_order = nil, nil, nil, nil
  per_call(function() known_rec, known_pk, known_created_at, known_order = nil, nil, nil, nil end)

  local function remember(rec, order)
    known_rec, known_pk, known_created_at, known_order = rec, rec.pk, rec.created_at, order
    return order
  end

  function order_of(rec)
    if rec == known_rec and rec.pk == known_pk and rec.created_at == known_created_at then
      return known_order
    end
    return remember(rec, order_prefix(rec) .. id_bytes(rec.id))
  end

  -- The task id an order key names, in either form.
  function order_id(order)
    if #order == PACKED_ORDER_LENGTH then
      if not HEX_OF_BYTE then
        make_tables()
      end
      local x = HEX_OF_BYTE
      local b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, b16 = string.byte(order, 20, 35)
      return x[b1] .. x[b2] .. x[b3] .. x[b4] .. '-' .. x[b5] .. x[b6] .. '-' .. x[b7] .. x[b8] .. '-' .. x[b9] .. x[b10]
        .. '-' .. x[b11] .. x[b12] .. x[b13] .. x[b14] .. x[b15] .. x[b16]
    end
    local mark = string.byte(order, ORDER_PRIORITY_WIDTH + 1)
    local width = (mark == 45 and 18) or (mark == 58 and 19) or 16
    return string.sub(order, ORDER_PRIORITY_WIDTH + width + 1)
  end

  -- Whether a packed `order` is the key of `rec`, loaded by the id it names (order_id):
  -- only its priority key and created_at are compared, read back as digits (half the work
  -- of packing the record's; created_at in 16 digits, the form of 1970 to 2286).
  function order_names_loaded(order, rec)
    if not DIGITS_OF_BYTE then
      make_tables()
    end
    local d = DIGITS_OF_BYTE
    local p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, mark, c1, c2, c3, c4, c5, c6, c7, c8 = string.byte(order, 1, 19)
    local named
    if mark == 10 then
      named = d[p1] .. d[p2] .. d[p3] .. d[p4] .. d[p5] .. d[p6] .. d[p7] .. d[p8] .. d[p9] .. d[p10] == rec.pk
        and d[c1] .. d[c2] .. d[c3] .. d[c4] .. d[c5] .. d[c6] .. d[c7] .. d[c8] == rec.created_at
    else
      named = string.sub(order, 1, 19) == order_prefix(rec)
    end
    if named then
      remember(rec, order)
    end
    return named
  end
end

-- The order key of an earlier version (created_at is stored in its text form).
local function text_order_of(rec)
  return rec.pk .. rec.created_at .. rec.id
end

-- Whether `order` is the task's order key, in either form.
local function order_names(order, rec)
  return order == order_of(rec) or (#order ~= PACKED_ORDER_LENGTH and order == text_order_of(rec))
end

-- The live task an order key names (load_record): a packed key's id is a lower-case UUID by
-- construction (order_id), so that id's form needs no check (0.9 µs a pop).
local function load_named(order)
  return load_record(order_id(order), #order == PACKED_ORDER_LENGTH)
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
  local twin_rec = twin and load_record(twin)
  if twin_rec and twin_rec.status == 'queued' then
    return twin
  end
  return nil
end

-- A task that holds a lease claims its hash unless another live twin has it (one it holds
-- already is left as it is).
local function claim_hash_if_free(rec)
  if not is_set(rec.hash) then
    return
  end
  local holder = redis.call('HGET', K_HASHES, rec.hash)
  if holder ~= rec.id and not (holder and redis.call('HEXISTS', K_TASKS, holder) == 1) then
    redis.call('HSET', K_HASHES, rec.hash, rec.id)
  end
end

-- The queue membership of a task: the queue itself, its secondary indexes, the dedup queue
-- (and, with fairness on, its fair structures: fair_index.lua).
-- A placed task of a limited group is its group's head; K_META limited_placed counts them.
-- `order`: the one it is placed under, when not its record's (a group's head waiting under
-- a text order key: refresh_group).
local function place(rec, order)
  order = order or order_of(rec)
  redis.call('ZADD', K_QUEUE, '0', order)
  for name, value in pairs(rec.ix) do
    if not (IX_IN_PAIRS[name] and pairs_ready()) then
      redis.call('ZADD', IX[name], '0', value .. NUL .. order)
    end
  end
  if rec.ix.dedup then
    redis.call('ZADD', K_DEDUPQ, '0', order)
  end
  place_pair(rec, order)
  if is_set(rec.lg) then
    redis.call('HINCRBY', K_META, 'limited_placed', 1)
  end
  if fair.on then
    fair.place(rec, order, pair_of(rec))
  end
end

-- `order`: the one it is placed under, when not its record's (candidates.lua, placed_again);
-- without, its record's, or until the migration is through its text one when not that.
local function unplace(rec, order)
  local given = order
  order = order or order_of(rec)
  local removed = redis.call('ZREM', K_QUEUE, order)
  if removed == 0 and not given and not orders_packed() then
    local text = text_order_of(rec)
    if redis.call('ZSCORE', K_QUEUE, text) then
      return unplace(rec, text)
    end
  end
  if removed == 1 and is_set(rec.lg) then
    redis.call('HINCRBY', K_META, 'limited_placed', -1)
  end
  for name, value in pairs(rec.ix) do
    if not (IX_IN_PAIRS[name] and pairs_ready()) then
      redis.call('ZREM', IX[name], value .. NUL .. order)
    end
  end
  if rec.ix.dedup then
    redis.call('ZREM', K_DEDUPQ, order)
  end
  unplace_pair(rec, order)
  if fair.on then
    fair.unplace(rec, order, pair_of(rec))
  end
end

-- Limits per group (REDISCHED_LIMITS, redisched/limit_rules.py). A task of a limited group
-- (rec.lg) waits in K_LIMQ as "<group>\0<order key>"; only the group's head is placed on
-- the queue, and only while the group has room, so a pop never passes over the rest of a
-- group, and a group at its limit costs a pop nothing. K_LIMITS per group: "<g>\0rule" the
-- key of the rule that made it, "<g>\0n" its dispatched and running tasks, "<g>\0last" the
-- ms (rounded up) its latest task left the queue, so the spacing in force now, not the one
-- when it left, says when the next may go; per rule: "\0rule\0<key>" its spec
-- "<spacing ms>,<concurrency>" (0 = none; no spec: the rule is gone, no limit), so a
-- replaced rule holds for its groups from the next decision on (rules.lua); "\0version"
-- the rules version the partition follows. K_LIMWAKE: groups closed until a time, scored
-- by it; pops reopen the due ones.
local function group_head(group)
  local member = redis.call('ZRANGE', K_LIMQ, '[' .. group .. NUL, '(' .. group .. '\1', 'BYLEX', 'LIMIT', 0, 1)[1]
  return member and string.sub(member, #group + 2) or nil
end

local function now_ms()
  return math.floor(clock_us() / 1000)
end

-- spacing ms, concurrency (0: none), dispatched and running, ms before which none may go (0: none)
local function group_state(group, now)
  local v = redis.call('HMGET', K_LIMITS, group .. NUL .. 'rule', group .. NUL .. 'n', group .. NUL .. 'last')
  local spec = v[1] and redis.call('HGET', K_LIMITS, NUL .. 'rule' .. NUL .. v[1])
  local spacing, cap = string.match(spec or '0,0', '^(%d+),(%d+)$')
  spacing = tonumber(spacing or 0)
  -- a value that is not a number (written by hand) counts as none: the group heals, never errs
  local last = tonumber(v[3] or '')
  if last and last > now + 1 then
    -- ahead of this Redis's clock (a failover to a host whose clock is behind, or written by
    -- hand), past spend_group's rounding up: taken as now, so the group waits one spacing,
    -- not until the clock catches up
    last = now + 1
    if SCRIPT_WRITES then
      redis.call('HSET', K_LIMITS, group .. NUL .. 'last', string.format('%d', last))
    end
  end
  local at = (spacing > 0 and last) and last + spacing or 0
  return spacing, tonumber(cap or 0), tonumber(v[2] or '') or 0, at
end

-- A group with no task left, queued or leased, is forgotten (its rule and cooldown end)
-- when its last lease ends or its cooldown does (free_group, wake_groups: not in the middle
-- of a pop or a twin's update, which take a task off and go on with its group), so K_LIMITS
-- holds live groups, not every group ever pushed; one still cooling is kept until its
-- cooldown ends (K_LIMWAKE brings it back here then).
local function forget_idle_group(group)
  local now = now_ms()
  local _, _, active, at = group_state(group, now)
  if active > 0 then
    return
  end
  if at > now then
    redis.call('ZADD', K_LIMWAKE, at, group)
  else
    redis.call('HDEL', K_LIMITS, group .. NUL .. 'rule', group .. NUL .. 'last')
  end
end

-- Places the group's head when the group has room, takes it off when not. `rec`: the task
-- in hand (maybe not saved yet), used when it is the head.
-- A head naming no live queued task at that place (its record gone, or moved aside:
-- common.lua's healing; a leased task's member written back by hand) is a stray: it leaves
-- the group (and the queue, if placed) and the next member is the head, at most
-- GROUP_STRAYS_MAX a call; before, placing it failed every script that met the group.
local GROUP_STRAYS_MAX = 100

local function drop_group_stray(group, head)
  redis.call('ZREM', K_LIMQ, group .. NUL .. head)
  if redis.call('ZREM', K_QUEUE, head) == 1 then
    redis.call('HINCRBY', K_META, 'limited_placed', -1)
  end
  redis.call('HINCRBY', K_META, 'stray_members', 1)
end

local function refresh_group(group, rec, may_forget)
  local now = now_ms()
  local _, cap, active, at = group_state(group, now)
  local open = (cap == 0 or active < cap) and at <= now
  for _ = 1, GROUP_STRAYS_MAX do
    local head = group_head(group)
    if not head then
      if may_forget then
        forget_idle_group(group)
      end
      return
    end
    local placed = redis.call('ZSCORE', K_QUEUE, head) ~= false
    if open == placed then
      break
    end
    local head_rec = (rec and order_names(head, rec)) and rec or load_named(head)
    if head_rec and head_rec.status == 'queued' and order_names(head, head_rec) then
      -- under the head's own member: a text one waits for the migration in that form
      if open then
        place(head_rec, head)
      else
        unplace(head_rec, head)
      end
      break
    end
    drop_group_stray(group, head)
    if head_rec and head_rec.status == 'queued' and head_rec.lg == group then
      -- its record's order edited by hand: it waits under that one (candidates.lua, placed_again)
      redis.call('ZADD', K_LIMQ, 0, group .. NUL .. order_of(head_rec))
    end
  end
  if at > now then
    redis.call('ZADD', K_LIMWAKE, at, group)
  end
end

-- A task of a limited group leaves the queue for a lease: it counts against the group.
local function spend_group(rec)
  if not is_set(rec.lg) or rec.lc then
    return
  end
  local n = redis.pcall('HINCRBY', K_LIMITS, rec.lg .. NUL .. 'n', 1)
  if type(n) == 'table' or n < 1 then
    -- not an integer, or below 0 before (written by hand): heal, this task is out; a count
    -- left negative would let the group go over its cap by as much
    redis.call('HSET', K_LIMITS, rec.lg .. NUL .. 'n', 1)
  end
  -- rounded up: the next may go once a full spacing has passed, to the µs
  redis.call('HSET', K_LIMITS, rec.lg .. NUL .. 'last', string.format('%d', math.ceil(clock_us() / 1000)))
  rec.lc = 1
  refresh_group(rec.lg)
end

-- Its lease ends (finished, handed back, reaped): the group has room again.
local function free_group(rec)
  if not rec.lc then
    return
  end
  rec.lc = nil
  local n = redis.pcall('HINCRBY', K_LIMITS, rec.lg .. NUL .. 'n', -1)
  if type(n) == 'table' or n <= 0 then  -- a table: not an integer (written by hand), dropped
    redis.call('HDEL', K_LIMITS, rec.lg .. NUL .. 'n')
  end
  refresh_group(rec.lg, nil, true)
end

local WAKE_PER_CALL = '100'

local function wake_groups()
  local due = redis.call('ZRANGE', K_LIMWAKE, '-inf', string.format('%d', math.floor(now_us() / 1000)), 'BYSCORE', 'LIMIT', '0', WAKE_PER_CALL)
  for _, group in ipairs(due) do
    redis.call('ZREM', K_LIMWAKE, group)
    refresh_group(group, nil, true)
  end
end

-- Queued tasks, placed or waiting in their group.
local function queued_count()
  local placed = tonumber(redis.call('HGET', K_META, 'limited_placed') or '0')
  return redis.call('ZCARD', K_QUEUE) + redis.call('ZCARD', K_LIMQ) - placed
end

-- Puts a task on its queue (a limited one in its group) and in the dedup map.
-- A queued task of a limited group is also in K_LIMOBJ by its organisation and object.
local function object_entry(rec)
  return rec.organisation .. NUL .. rec.lo .. NUL .. rec.id
end

local function enqueue(rec)
  if is_set(rec.lg) then
    if is_set(rec.lo) then
      redis.call('ZADD', K_LIMOBJ, 0, object_entry(rec))
    end
    local order = order_of(rec)
    local old_head = group_head(rec.lg)
    redis.call('ZADD', K_LIMQ, 0, rec.lg .. NUL .. order)
    if old_head and order < old_head and redis.call('ZSCORE', K_QUEUE, old_head) then
      local head_rec = load_named(old_head)
      if head_rec then
        unplace(head_rec, old_head)
      else  -- its record gone or moved aside just now: the head is a stray
        drop_group_stray(rec.lg, old_head)
      end
    end
    refresh_group(rec.lg, rec)
  else
    place(rec)
  end
  claim_hash(rec)
end

-- Takes a task off its queue; it stays live (and keeps its hash) until it finishes.
local function dequeue(rec)
  unplace(rec)
  if is_set(rec.lg) then
    if redis.call('ZREM', K_LIMQ, rec.lg .. NUL .. order_of(rec)) == 0 and not orders_packed() then
      redis.call('ZREM', K_LIMQ, rec.lg .. NUL .. text_order_of(rec))
    end
    if is_set(rec.lo) then
      redis.call('ZREM', K_LIMOBJ, object_entry(rec))
    end
    refresh_group(rec.lg)
  end
end

-- Whether the queued task is where its record's order puts it: placed, or waiting in its group.
local function placed_under_own(rec)
  local key, prefix = K_QUEUE, ''
  if is_set(rec.lg) then
    key, prefix = K_LIMQ, rec.lg .. NUL
  end
  return redis.call('ZSCORE', key, prefix .. order_of(rec)) ~= false
    or (not orders_packed() and redis.call('ZSCORE', key, prefix .. text_order_of(rec)) ~= false)
end

-- A queued task placed (or waiting in its group) under `order`, not its record's order key
-- (a text one, the record's order edited by hand), is put under its own: every member of
-- `order` off, its own on (a task without a group placed first, so its organisation stays
-- listed for the fair pop meanwhile and keeps its virtual time).
local function move_to_own_order(rec, order)
  if is_set(rec.lg) then
    unplace(rec, order)
    redis.call('ZREM', K_LIMQ, rec.lg .. NUL .. order)
    enqueue(rec)
  else
    place(rec)
    unplace(rec, order)
  end
end

-- Adds n to this 10-second bucket's count of `op` (push, pop, fail) in the rates ring
-- (keys.py): slot = bucket mod RATE_SLOTS holds bucket * RATE_COUNT_SPAN + count, so one
-- HINCRBY counts (1.45 µs a call; a read, a match and a write took 3.3). A slot left from
-- an older lap, or in an earlier version's "<bucket>:<count>" text (which HINCRBY refuses),
-- starts over, as does a bucket past RATE_COUNT_SPAN - 1 counts. Bounded by construction:
-- RATE_SLOTS fields per op, never trimmed.
local function count_bucket(op, n, now)
  local bucket = math.floor(now / RATE_BUCKET_US)
  local field = op .. ':' .. (bucket % RATE_SLOTS)
  local total = redis.pcall('HINCRBY', K_RATES, field, n)
  if type(total) ~= 'number' or math.floor(total / RATE_COUNT_SPAN) ~= bucket then
    redis.call('HSET', K_RATES, field, string.format('%d', bucket * RATE_COUNT_SPAN + n))
  end
end

local function set_lease(id, now, lease_ms)
  redis.call('ZADD', K_LEASES, string.format('%d', math.floor(now / 1000) + lease_ms), id)
end

-- A dispatched or running task (patch.lua, restore.lua): its group slot spent, its lease
-- set (dispatch or running length by status), its hash claimed unless a live twin has it.
local function hold_lease(rec, now, dispatch_ms, running_ms)
  spend_group(rec)
  set_lease(rec.id, now, tonumber(rec.status == 'dispatched' and dispatch_ms or running_ms))
  claim_hash_if_free(rec)
end

-- A limited task placed (push.lua, restore.lua) records its group's rule (key and spec) and
-- that the group was seen now: the latest LIMIT_GROUPS_KEPT groups are remembered.
local function note_group_rule(rec, rule_key, spec, now)
  redis.call('HSET', K_LIMITS, rec.lg .. NUL .. 'rule', rule_key, NUL .. 'rule' .. NUL .. rule_key, spec)
  redis.call('ZADD', K_LIMGROUPS, math.floor(now / 1000), rec.lg)
  redis.call('ZREMRANGEBYRANK', K_LIMGROUPS, 0, -LIMIT_GROUPS_KEPT - 1)
end

-- The error codes E_CONFLICT, E_QUEUE_FULL, E_ID_EXISTS, E_NOT_FOUND, E_STALE_LEASE are
-- locals of the generated preamble, from redisched/errors.py's ScriptError.
