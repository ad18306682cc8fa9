--- @include "common"
--- @include "candidates"

-- The fair pop (REDISCHED_FAIRNESS=organisation; the structures: fair_index.lua). Among the
-- organisations with a task matching the pop's filter, the one with the least virtual time
-- (tasks served / weight: start-time fair queueing) goes next; within it, queue order.
-- Tasks of priority <= 1 (a person's scan) pass fairness: they go first, as they pass maxsize.
--
-- Cost: O(log N + log K) per task handed out. The organisations come from the driving
-- ranges' listings, merged by listed vt, one ZRANGE per step; a listing found stale (the org
-- was served through another range since) is re-listed, at most FAIR_RESCORE_MAX per task,
-- then the head is taken as it is. An organisation whose tasks all fail the filter is passed
-- over at the cost of one candidate of the scan budget.
do
local FAIR_RESCORE_MAX = 32

-- The organisations a filter names in a top-level eq/in on organisation (nil: any).
local function filter_orgs(filter)
  if filter == nil then
    return nil
  end
  local leaves = filter.op and {filter} or filter['and'] or {}
  local orgs = nil
  for _, leaf in ipairs(leaves) do
    if leaf.col == 'organisation' and leaf.path == nil and (leaf.op == 'eq' or leaf.op == 'in') then
      local named, values = {}, leaf.op == 'eq' and {leaf.val} or leaf.val
      for _, value in ipairs(values) do
        if type(value) == 'string' and (orgs == nil or orgs[value]) then
          named[value] = true
        end
      end
      orgs = named
    end
  end
  return orgs
end

-- The fair range id of each of the pop's driving ranges (candidates.lua): 'q', 'b:<id>', ...
local FAIR_RANGE_PREFIX = {boefje = 'b:', image = 'i:', pair = 'p:'}

local function fair_range_id(range)
  if range.value == nil then
    return 'q'
  end
  return FAIR_RANGE_PREFIX[range.ix] .. range.value
end

-- One organisation's slice of a fair range, walked by scan() as any range (candidates.lua);
-- `start`: its first lex bound (still its min after the scan: the slice was empty).
local function org_range(id, org, ix, value)
  local key, min, max, skip = fair.slice(id, org)
  if id == 'q' then
    ix, value = 'org', org
  end
  return {key = key, min = min, max = max, skip = skip, batch = 1, ix = ix, value = value, org = org, id = id, start = min}
end

-- The pop's driving ranges restricted to one organisation.
local function ranges_of_org(org, ranges)
  if ranges[1] and ranges[1].ix == 'org' then
    return {lex_range(IX.org, org, 'org')}  -- driven by the organisation index: its own slice
  end
  -- only the slices it is listed in (fair_index.lua: listed while it has tasks there): one
  -- HMGET, not a ZRANGE in each of many slices (1,000 pairs: 6,026 -> ~2,000 commands a pop)
  local ids, fields = {}, {}
  for i, range in ipairs(ranges) do
    ids[i] = fair_range_id(range)
    fields[i] = ids[i] .. NUL .. org
  end
  local listed = #ranges > 1 and redis.call('HMGET', K_FAIR_VT, unpack(fields)) or nil
  local cut = {}
  for i, range in ipairs(ranges) do
    if not listed or listed[i] then
      cut[#cut + 1] = org_range(ids[i], org, range.ix, range.value)
    end
  end
  return cut
end

-- A cursor over one range's listing (K_FAIR_ORGS), in vt order, one member per step.
local function org_cursor(id)
  return {id = id, min = '[' .. id .. NUL, max = '(' .. id .. '\1', skip = #id + 1}
end

-- A member without its second NUL (written by hand) failed every pop of the queue; it is
-- removed (a stray), at most FAIR_MALFORMED_MAX a read, past them the listing reads as ended.
local FAIR_MALFORMED_MAX = 32

local function cursor_head(c)
  if c.head == nil then
    c.head = false
    for _ = 1, FAIR_MALFORMED_MAX do
      local member = redis.call('ZRANGE', K_FAIR_ORGS, c.min, c.max, 'BYLEX', 'LIMIT', 0, 1)[1]
      if not member then
        break
      end
      c.member = member
      local rest = string.sub(member, c.skip + 1)
      local at = string.find(rest, NUL, 1, true)
      if at then
        c.head, c.key, c.org = rest, string.sub(rest, 1, at - 1), string.sub(rest, at + 1)
        break
      end
      c.min = '(' .. member
      if SCRIPT_WRITES then
        redis.call('ZREM', K_FAIR_ORGS, member)
        redis.call('HINCRBY', K_META, 'stray_members', 1)
      end
    end
  end
  return c.head
end

local function cursor_next(c)
  c.min, c.head = '(' .. c.member, nil
end

-- Per call (a merged pop serves many requests): weights read, served counts to add (written
-- once, by fair_flush), and whether the call's ranges hold no task of priority <= 1.
local fair_weights, fair_served, fair_no_manual, fair_system = {}, {}, false, nil
per_call(function()
  fair_weights, fair_served, fair_no_manual, fair_system = {}, {}, false, nil
end)

-- The org's virtual time, {vt = ...}; the system's is read with the first (fair_system).
local function vt_state(org)
  local state = fair.vts[org]
  if state == nil then
    local got = redis.call('HMGET', K_FAIR_VT, org, NUL)
    state = {vt = fair.stored_vt(got[1])}
    fair_system = fair_system or fair.stored_vt(got[2])
    fair.vts[org] = state
  end
  return state
end

local function weight_of(org)
  local weight = fair_weights[org]
  if weight == nil then
    weight = tonumber(redis.call('HGET', K_FAIR_WEIGHTS, org) or '1')
    if not weight or weight ~= weight or weight <= 0 then  -- text, nan, <= 0 (written by hand)
      weight = 1
    end
    -- as set_weights keeps them: a tiny weight made a virtual time inf (then nan), for good
    weight = math.min(math.max(weight, 1e-6), 1e6)
    fair_weights[org] = weight
  end
  return weight
end

local function count_served(org)
  fair_served[org] = (fair_served[org] or 0) + 1
end

-- The end of a pop: the served counts of its call, one HINCRBY per organisation.
local function fair_flush()
  for org, n in pairs(fair_served) do
    redis.call('HINCRBY', K_FAIR_SERVED, org, n)
  end
  fair_served = {}
end

-- Moves the org's listing in a range to a later vt key; its field in K_FAIR_VT is the
-- caller's to write (`fields`), or written here.
local function relist(id, org, old_key, new_key, fields)
  redis.call('ZREM', K_FAIR_ORGS, id .. NUL .. old_key .. NUL .. org)
  fair.list(id, org, new_key)
  if fields then
    fields[#fields + 1], fields[#fields + 2] = id .. NUL .. org, new_key
  else
    redis.call('HSET', K_FAIR_VT, id .. NUL .. org, new_key)
  end
end

-- The next organisation in vt order over the cursors (nil: none left); `tried` the orgs this
-- pop has looked at already. Returns the org and the cursors it heads (to re-list it there).
local function next_org(cursors, tried)
  local rescored = 0
  while true do
    local best = nil
    for _, c in ipairs(cursors) do
      local head = cursor_head(c)
      if head and (best == nil or head < best.head) then
        best = c
      end
    end
    if best == nil then
      return nil
    end
    local org = best.org
    if tried[org] then
      cursor_next(best)
    else
      local state = vt_state(org)
      local key = fair.vt_key(state.vt)
      if key > best.key and rescored < FAIR_RESCORE_MAX then
        relist(best.id, org, best.key, key)
        rescored = rescored + 1
        cursor_next(best)
      else
        tried[org] = true
        local heads = {}
        for _, c in ipairs(cursors) do
          if c.head and c.org == org then
            heads[#heads + 1] = c
          end
        end
        return org, heads, state
      end
    end
  end
end

-- A task handed out: its organisation's virtual time grows by 1 / weight. `advance`: the
-- system virtual time follows (not for a pop restricted to some organisations, whose
-- choice says nothing of the others'). `heads`: the listings it was chosen from, re-listed;
-- `state`: its vt_state when the caller has it.
local function fair_charge(org, advance, heads, state)
  count_served(org)
  state = state or vt_state(org)
  local new_vt = state.vt + 1 / weight_of(org)
  local fields = {org, string.format('%.17g', new_vt)}
  if advance and state.vt > fair_system then
    fields[3], fields[4] = NUL, string.format('%.17g', state.vt)
    fair_system = state.vt
  end
  local key = fair.vt_key(new_vt)
  for _, c in ipairs(heads or {}) do
    if not fair.emptied[c.id .. NUL .. org] and c.key < key then
      relist(c.id, org, c.key, key, fields)
      c.key = key
    end
  end
  redis.call('HSET', K_FAIR_VT, unpack(fields))
  state.vt = new_vt
end

-- The driving ranges cut to the tasks of priority <= 1 (order keys below MANUAL_ORDER_END;
-- until the migration is through, the text ones from '0' to below TEXT_MANUAL_ORDER_END too).
local function manual_ranges(ranges)
  local cut, text = {}, not orders_packed()
  for _, r in ipairs(ranges) do
    local prefix = r.value and (r.value .. NUL) or ''
    cut[#cut + 1] = {
      key = r.key, min = r.value and ('[' .. prefix) or '-', max = '(' .. prefix .. MANUAL_ORDER_END, skip = r.skip,
      batch = 1, ix = r.ix, value = r.value,
    }
    if text then
      cut[#cut + 1] = {
        key = r.key, min = '[' .. prefix .. '0', max = '(' .. prefix .. TEXT_MANUAL_ORDER_END, skip = r.skip, batch = 1,
        ix = r.ix, value = r.value,
      }
    end
  end
  return cut
end

-- Whether the queue holds a task of priority <= 1.
local function manual_placed()
  return redis.call('ZRANGE', K_QUEUE, '-', '(' .. MANUAL_ORDER_END, 'BYLEX', 'LIMIT', 0, 1)[1] ~= nil
    or (not orders_packed() and redis.call('ZRANGE', K_QUEUE, '[0', '(' .. TEXT_MANUAL_ORDER_END, 'BYLEX', 'LIMIT', 0, 1)[1] ~= nil)
end

-- The organisations to try, for a pop restricted to `named` ones: those, by true vt.
local function named_in_vt_order(named)
  local orgs, vts = {}, {}
  for org in pairs(named) do
    orgs[#orgs + 1] = org
  end
  if #orgs == 0 then
    return orgs
  end
  table.sort(orgs)
  local got = redis.call('HMGET', K_FAIR_VT, unpack(orgs))
  for i, org in ipairs(orgs) do
    vts[org] = fair.stored_vt(got[i])
  end
  table.sort(orgs, function(a, b)
    return vts[a] < vts[b] or (vts[a] == vts[b] and a < b)
  end)
  return orgs
end

-- The pop, fair: `s` = {filter, ranges (the driving ranges, candidates.lua), matches,
-- budget, dedup (the boefje rule), limit, dispatch (pop.lua's: hands a task out, false once
-- the request has enough), taken() (how many it has handed out)}.
local function fair_pop(s)
  if #s.ranges > FAIR_SLICES_MAX then
    -- (keys.py) the choice reads each range's listing, ~4 µs: 512 cost ~2.5 ms of Redis a
    -- pop with the plain search that follows a fruitless one. Past it the plain search
    -- serves the pop (pop.lua), in queue order.
    return
  end
  local budget, done = s.budget, false
  -- an organisation passed over costs a walk of the n slices' listings (next_org) and an
  -- HMGET of n fields (ranges_of_org), ~2 µs a slice: at most 1,024 / n of them a call
  if #s.ranges > 1 then
    budget = math.min(budget, math.max(1, math.floor(1024 / #s.ranges)))
  end
  local function handed(rec)
    local before = s.taken()
    done = not s.dispatch(rec)
    return s.taken() > before
  end
  -- a person's scans first, in queue order; counted as served, not charged to the vt
  local manual_limit, stopped = s.dedup and 1 or s.limit, false
  if not fair_no_manual and #s.ranges > 1 then
    -- the queue is ordered by order key: one read tells whether any task of priority <= 1
    -- is placed at all, so the n slices are read for them only when one is (exact, nothing
    -- to keep in step; 1,000 slices: 1 command, not 1,000)
    fair_no_manual = not manual_placed()
  end
  if not fair_no_manual then
    budget = scan(manual_ranges(s.ranges), s.matches, budget, function(rec)
      if handed(rec) then
        count_served(rec.organisation)
        stopped = done or s.taken() >= manual_limit
        return not stopped
      end
      return true
    end)
    -- none left (or none that matches within the budget): the call's next requests skip this
    fair_no_manual = not stopped
  end
  if done or (s.dedup and s.taken() > 0) then
    return
  end
  local named = filter_orgs(s.filter)
  local advance = named == nil
  local function charge(heads, state)
    return function(rec)
      if not handed(rec) then
        return true  -- moved aside: on to the next
      end
      fair_charge(rec.organisation, advance, heads, state)
      return false
    end
  end
  while not done and budget > 0 do
    local tried, cursors, candidates, at = {}, nil, nil, 0
    if named then
      candidates = named_in_vt_order(named)
    else
      cursors = {}
      for i, range in ipairs(s.ranges) do
        cursors[i] = org_cursor(fair_range_id(range))
      end
    end
    local before = s.taken()
    while s.taken() == before and not done and budget > 0 do
      local org, heads, state
      if named then
        at = at + 1
        org = candidates[at]
      else
        org, heads, state = next_org(cursors, tried)
      end
      if org == nil then
        return
      end
      local batch_key = nil
      if s.dedup then
        -- the boefje rule within the organisation: its best matching task with a key brings its batch
        budget = scan({org_range('d', org, 'dedup')}, s.matches, budget, function(rec)
          batch_key = rec.ix.dedup
          return false
        end)
      end
      if batch_key then
        budget = scan({lex_range(IX.dedup, batch_key, 'dedup')}, s.matches, budget, function(rec)
          if handed(rec) then
            local own = rec.organisation == org
            fair_charge(rec.organisation, advance, own and heads or nil, own and state or nil)
          end
          return not done
        end)
      else
        local ranges = ranges_of_org(org, s.ranges)
        budget = scan(ranges, s.matches, budget, charge(heads, state))
        if s.taken() == before then
          budget = budget - 1  -- an organisation passed over
          local emptied = {}  -- listed, but no task left there (healed members)
          for _, range in ipairs(ranges) do
            if range.id and range.min == range.start and range.done then
              emptied[#emptied + 1] = range.id
            end
          end
          if #emptied > 0 then
            fair.delist(org, emptied)
          end
        end
      end
    end
    if s.dedup then
      return
    end
  end
end

fair.pop, fair.flush = fair_pop, fair_flush
end
