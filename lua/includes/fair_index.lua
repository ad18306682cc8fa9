-- Fair pop across organisations (REDISCHED_FAIRNESS=organisation): the structures, kept in
-- step with the queue by place/unplace (common.lua), so limits (only a group's head is
-- placed) and every way on and off the queue keep them for free. The keys (keys.py) are
-- handed to the scripts only with fairness on: FAIR is false, and none of this runs, without.
--
-- A *range* is where a pop's search is driven from: 'q' the queue, 'd' the dedup queue,
-- 'b:<boefje id>', 'i:<oci image>' and 'p:<pair>' those indexes' slices (the pair of
-- common.lua's pair index, handed in by place/unplace). Per range:
--   K_FAIR_TASKS "<range>\0<org>\0<order key>": its tasks by organisation (an org's best task
--                in a range is one ZRANGE); for 'q' the organisation index is that already;
--   K_FAIR_ORGS  "<range>\0<vt key>\0<org>": its organisations by virtual time, listed while
--                they have tasks there (taken off eagerly when the last one leaves);
--   K_FAIR_VT    "<range>\0<org>" -> the vt key the org is listed under there; "<org>" -> its
--                virtual time (tasks served / weight); "\0" -> the system virtual time.
-- An org's listed vt is never above its true one (virtual times only grow); the pop re-lists
-- the ones it finds stale (fair.lua).
-- Defined before common.lua (which calls it from place/unplace): self-contained. One local,
-- `fair`, whatever the include holds: the library's main chunk has room for 200 locals.
-- fair.emptied: "<range>\0<org>" taken off its listing by this call; fair.vts: org -> {vt}
-- as this call last read or wrote it (Redis runs one call at a time: nothing else changes it).
local fair = {on = false, emptied = {}, vts = {}}
per_call(function()
  fair.on, fair.emptied, fair.vts = K_FAIR_TASKS ~= nil, {}, {}
end)

do
local NUL = '\0'

local function vt_key(vt)
  return string.format('%024.6f', vt)
end

-- A stored virtual time, or 0 where it is none (written by hand: nan, inf, text), so the
-- lex keys and the sorts by it stay sound; weights are kept to [1e-6, 1e6] (fair.lua), so a
-- real one stays far below 1e15.
local function stored_vt(text)
  local vt = tonumber(text or '')
  return (vt and vt >= 0 and vt < 1e15) and vt or 0
end

local function fair_ranges_of(rec, pair)
  local ids = {'q'}
  if rec.ix.boefje then
    ids[#ids + 1] = 'b:' .. rec.ix.boefje
  end
  if rec.ix.image then
    ids[#ids + 1] = 'i:' .. rec.ix.image
  end
  if pair then
    ids[#ids + 1] = 'p:' .. pair
  end
  if rec.ix.dedup then
    ids[#ids + 1] = 'd'
  end
  return ids
end

-- Where an organisation's tasks in a range are: key, lex min, lex max, prefix length.
local function fair_slice(id, org)
  if id == 'q' then
    return IX.org, '[' .. org .. NUL, '(' .. org .. '\1', #org + 1
  end
  local prefix = id .. NUL .. org
  return K_FAIR_TASKS, '[' .. prefix .. NUL, '(' .. prefix .. '\1', #prefix + 1
end

local function fair_list(id, org, key)
  redis.call('ZADD', K_FAIR_ORGS, 0, id .. NUL .. key .. NUL .. org)
  fair.emptied[id .. NUL .. org] = nil
end

-- Takes the org off its listing in each of the ranges `ids`: 3 commands however many.
local function fair_delist(org, ids)
  local fields = {}
  for i, id in ipairs(ids) do
    fields[i] = id .. NUL .. org
    fair.emptied[fields[i]] = true
  end
  local keys, members = redis.call('HMGET', K_FAIR_VT, unpack(fields)), {}
  for i, id in ipairs(ids) do
    if keys[i] then
      members[#members + 1] = id .. NUL .. keys[i] .. NUL .. org
    end
  end
  if #members > 0 then
    redis.call('ZREM', K_FAIR_ORGS, unpack(members))
    redis.call('HDEL', K_FAIR_VT, unpack(fields))
  end
end

local function fair_place(rec, order, pair)
  local org, ids = rec.organisation, fair_ranges_of(rec, pair)
  local fields = {org, NUL}
  for i, id in ipairs(ids) do
    if id ~= 'q' then
      redis.call('ZADD', K_FAIR_TASKS, 0, id .. NUL .. org .. NUL .. order)
    end
    fields[i + 2] = id .. NUL .. org
  end
  local got = redis.call('HMGET', K_FAIR_VT, unpack(fields))
  local vt, changes = stored_vt(got[1]), {}
  if not got[3] then
    -- it becomes active: it starts at the system virtual time, so an idle org banks no credit
    local system_vt = stored_vt(got[2])
    if system_vt > vt then
      vt = system_vt
      changes[#changes + 1], changes[#changes + 2] = org, string.format('%.17g', vt)
      fair.vts[org] = nil
    end
  end
  local key = vt_key(vt)
  for i, id in ipairs(ids) do
    if not got[i + 2] then
      fair_list(id, org, key)
      changes[#changes + 1], changes[#changes + 2] = fields[i + 2], key
    end
  end
  if #changes > 0 then
    redis.call('HSET', K_FAIR_VT, unpack(changes))
  end
end

-- After unplace took the task off the queue and its indexes (so off the org index, 'q').
-- Its members go in one ZREM; then which of its ranges the org has no task left in: its
-- pair's slice first (a task left there is one in its boefje's, image's and the queue's:
-- one read while the org has more of that pair), then the queue (none left there: none
-- anywhere), then each other range; the emptied ones are delisted at once.
local function fair_unplace(rec, order, pair)
  local org, ids, members = rec.organisation, fair_ranges_of(rec, pair), {}
  for _, id in ipairs(ids) do
    if id ~= 'q' then
      members[#members + 1] = id .. NUL .. org .. NUL .. order
    end
  end
  if #members > 0 then
    redis.call('ZREM', K_FAIR_TASKS, unpack(members))
  end
  local function holds(id)
    local key, min, max = fair_slice(id, org)
    return redis.call('ZRANGE', key, min, max, 'BYLEX', 'LIMIT', 0, 1)[1] ~= nil
  end
  local pair_id = pair and ('p:' .. pair)
  if pair_id and holds(pair_id) then
    return
  end
  local emptied, left = {}, holds('q')
  for _, id in ipairs(ids) do
    if not left or (id ~= 'q' and (id == pair_id or not holds(id))) then
      emptied[#emptied + 1] = id
    end
  end
  if #emptied > 0 then
    fair_delist(org, emptied)
  end
end

fair.stored_vt, fair.vt_key, fair.slice, fair.list, fair.delist = stored_vt, vt_key, fair_slice, fair_list, fair_delist
fair.place, fair.unplace = fair_place, fair_unplace
end
