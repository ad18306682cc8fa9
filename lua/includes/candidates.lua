-- Walks queued tasks in queue order over one or more lex ranges (the queue itself, or the
-- slices of an index for the values a filter asks for), merging them like a k-way merge.
-- Each step is one ZRANGE ... BYLEX LIMIT: O(log N), whatever the queue depth.

-- A range walks forward from its last member fetched (an exclusive lex bound), not by an
-- offset (ZRANGE ... LIMIT <offset> skips the offset's members one by one), and fetches
-- members in growing batches: one at first (a pop that takes the head needs no more), up
-- to 32 once it is passing over many. Nothing else changes the sets during the script but
-- the script itself, which only removes members it has already taken.
local RANGE_BATCH_MAX = 32

-- `ix`: the index the set is of (its members name tasks with that index value, or, for the
-- dedup queue without a value, any value).
-- Its bounds are made when it first fetches (most of a pop's ranges never need to): strings
-- cost Lua ~0.4 µs each here.
local function lex_range(key, value, ix)
  if value == nil then
    return {key = key, min = '-', max = '+', skip = 0, batch = 1, ix = ix}
  end
  return {key = key, skip = #value + 1, batch = 1, ix = ix, value = value}
end

-- Whether a member names this live record (loaded by the id it names) as it is queued now:
-- a member left behind (a raw write, a record moved aside) names no task, another place, or
-- another index value.
local function names_queued(range, order, rec)
  if rec.status ~= 'queued' or (range.org ~= nil and rec.organisation ~= range.org) then
    return false
  end
  if #order == PACKED_ORDER_LENGTH and not order_names_loaded(order, rec) or #order ~= PACKED_ORDER_LENGTH and order ~= text_order_of(rec) then
    return false
  end
  if range.ix == nil then
    return true
  end
  if range.ix == 'pair' then
    return pair_of(rec) == range.value
  end
  local value = rec.ix[range.ix]
  return value ~= nil and (range.value == nil or value == range.value)
end

-- A live queued task met under a member that is not its order key (its record's priority or
-- created_at edited by hand) and placed under none of its own (the queue, or its group's
-- waiting set, has no member of its order) would stay live and queued, counted but never
-- popped: it is taken off its old place (the queue, its indexes, its pair and its head, the
-- fair listing, its group's waiting set) and put back under its record's order, so it still
-- runs. Only on the stray path: a member naming its task costs nothing.
local function placed_again(rec, order)
  if not (SCRIPT_WRITES and rec.status == 'queued') or order_names(order, rec) or placed_under_own(rec) then
    return false
  end
  move_to_own_order(rec, order)
  redis.call('HINCRBY', K_META, 'stray_members', 1)
  redis.log(redis.LOG_WARNING, 'redisched: task ' .. rec.id .. ' of ' .. K_TASKS .. ' placed again under its record\'s order')
  return true
end

-- range.seed: the range's first head, known before any fetch (a pair's, from K_HEADS).
local function range_head(range)
  if range.head == nil then
    if range.seed then
      range.head = range.seed
      return range.head
    end
    local members = range.members
    if members == nil or range.at > #members then
      if range.done then
        range.head = false
        return false
      end
      range.min = range.min or ('[' .. range.value .. NUL)
      range.max = range.max or ('(' .. range.value .. '\1')
      members = redis.call('ZRANGE', range.key, range.min, range.max, 'BYLEX', 'LIMIT', '0', string.format('%d', range.batch))
      range.members, range.at = members, 1
      range.done = #members < range.batch
      if #members > 0 then
        range.min = '(' .. members[#members]
      end
      range.batch = math.min(range.batch * 2, RANGE_BATCH_MAX)
    end
    local member = members[range.at]
    range.head = member and string.sub(member, range.skip + 1) or false
  end
  return range.head
end

local function advance(range)
  if range.seed then
    range.min, range.seed = '(' .. range.value .. NUL .. range.seed, nil
  else
    range.at = range.at + 1
  end
  range.head = nil
end

-- A pair's range not yet walked is kept as its head alone (a string, its pair in
-- ranges.pairs: pair_ranges), made a range when the scan first takes from it: a pop takes
-- from one of its ranges, and each range built cost ~4k instructions of allocation and GC.
local function pair_range(pair, head)
  return {key = K_PAIRS, skip = #pair + 1, batch = 2, ix = 'pair', value = pair, seed = head}
end

local function range_at(ranges, i)
  local range = ranges[i]
  if type(range) == 'string' then
    range = pair_range(ranges.pairs[i], range)
    ranges[i] = range
  end
  return range
end

-- Every range of `ranges` made (what reads their fields: the fair pop).
local function built_ranges(ranges)
  for i = 1, #ranges do
    range_at(ranges, i)
  end
  return ranges
end

local function best_head(ranges)
  local best, best_at = nil, nil
  for i = 1, #ranges do
    local range = ranges[i]
    local head = range
    if type(range) ~= 'string' then
      head = range_head(range)
    end
    if head and (best == nil or head < best) then
      best, best_at = head, i
    end
  end
  return best, best_at and range_at(ranges, best_at)
end

-- The time a call may spend passing over candidates, whatever the filter and the records
-- cost: set by search_args, shared by every scan of the call (merged pops scan in turn).
local scan_deadline_us, passed_over, scan_expired, clock_every = nil, 0, false, 16
per_call(function() scan_deadline_us, passed_over, scan_expired, clock_every = nil, 0, false, 16 end)
local LIKE_STEPS_PER_CALL = 100000  -- ~1.3 ms of LIKE matching (filter.lua, like_charge)

local function out_of_time()
  if not scan_expired then
    passed_over = passed_over + 1
    scan_expired = like_overspent or (passed_over % clock_every == 0 and clock_us() > scan_deadline_us)
  end
  return scan_expired
end

-- Hands each matching candidate to take(rec) in queue order until take returns false, the
-- ranges run dry, `budget` candidates have been passed over, or (walking the queue itself,
-- not an index's slice) the call's scan time is up. Returns the budget left.
local function scan_ranges(ranges, matches, budget, take)
  while true do
    local order, range = best_head(ranges)
    if not order then
      return budget
    end
    local member = range.seed and (range.value .. NUL .. range.seed) or range.members[range.at]
    advance(range)
    local rec = load_named(order)
    if not rec or not names_queued(range, order, rec) then
      if not (rec and placed_again(rec, order)) then
        drop_stray_member(range.key, member)  -- not charged to the budget; to the time, yes
      end
      if out_of_time() then
        return 0
      end
    elseif matches(rec) and not like_overspent then
      if not take(rec) then
        return budget
      end
    else
      -- Passing over an index's slice is bounded by the budget alone, which the caller sizes
      -- from the filter's cost (commands.py): the clock would make a busy machine's pop miss
      -- an indexed match. Only a walk over the queue itself stops on time as well.
      budget = budget - 1
      if budget <= 0 or (range.value == nil and out_of_time()) then
        return 0
      end
    end
  end
end

local function scan(ranges, matches, budget, take)
  local left = scan_ranges(ranges, matches, budget, take)
  flush_strays()
  return left
end

-- Decoded filters, kept across calls (runners send the same one on every pop): what the
-- matching adds to a leaf (its value set, its index) is derived from the leaf alone.
-- Bounded by the bytes of the filters kept; a larger one is decoded for its call only.
local FILTER_CACHE_BYTES, FILTER_CACHED_MAX = 262144, 16384
local filter_cache, filter_cache_bytes = {}, 0

local function decoded_filter(text)
  local node = filter_cache[text]
  if node == nil then
    node = cjson.decode(text)
    if #text <= FILTER_CACHED_MAX then
      if filter_cache_bytes + #text > FILTER_CACHE_BYTES then
        filter_cache, filter_cache_bytes = {}, 0
      end
      filter_cache[text], filter_cache_bytes = node, filter_cache_bytes + #text
    end
  end
  return node
end

-- The boefje id and image (nil: none) a pair names (common.lua, pair_name); nil for a
-- field K_HEADS should not hold.
local function pair_parts(pair)
  local digits = string.match(pair, '^%d+:')
  if not digits then
    return nil
  end
  local cut = #digits + tonumber(string.sub(digits, 1, -2))
  local rest = string.sub(pair, cut + 1)
  return string.sub(pair, #digits + 1, cut), rest ~= '' and string.sub(rest, 2) or nil
end

-- Every pair with tasks whose boefje id is in `boefjes` and image in `images` (a nil set:
-- any), from all of K_HEADS: at most PAIRS_LISTED of them, else nil.
local PAIRS_LISTED = 1024

local function listed_pair_ranges(boefjes, images)
  if redis.call('HLEN', K_HEADS) > PAIRS_LISTED then
    return nil
  end
  local heads, ranges = redis.call('HGETALL', K_HEADS), {pairs = {}}
  heads_known, heads_all = {}, true
  for i = 1, #heads, 2 do
    heads_known[heads[i]] = heads[i + 1]
    local boefje, image = pair_parts(heads[i])
    if boefje and (not boefjes or boefjes[boefje]) and (not images or (image and images[image])) then
      local n = #ranges + 1
      ranges[n], ranges.pairs[n] = heads[i + 1], heads[i]
    end
  end
  return ranges
end

-- The pair index's ranges for ARGV[at] = n, ARGV[at + 1] = m, n boefje ids, m images (n or
-- m may be 0, not both), then, with both, the n x m pair names (indexes.py, pair_name): one
-- range per pair that has tasks, their heads in one HMGET. With one list, every pair of its
-- values that has tasks, listed from K_HEADS (past PAIRS_LISTED pairs, the queue itself is
-- walked). Until the pair index is ready (common.lua, pairs_ready), the boefje index's
-- ranges, or the image index's.
local function pair_ranges(at)
  local n, m = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local first_name = at + 2 + n + m
  local ranges = {}
  if not pairs_ready() then
    local name, from, to = 'boefje', at + 2, at + 1 + n
    if n == 0 then
      name, from, to = 'image', at + 2, at + 1 + m
    end
    for i = from, to do
      ranges[#ranges + 1] = lex_range(IX[name], ARGV[i], name)
    end
    return ranges
  end
  if first_name > #ARGV then
    local function set_of(from, count)
      local set = {}
      for i = from, from + count - 1 do
        set[ARGV[i]] = true
      end
      return count > 0 and set or nil
    end
    return listed_pair_ranges(set_of(at + 2, n), set_of(at + 2 + n, m)) or {lex_range(K_QUEUE)}
  end
  local heads = redis.call('HMGET', K_HEADS, unpack(ARGV, first_name, #ARGV))
  heads_read, heads_names, heads_from = heads, ARGV, first_name
  local pairs_of = {}
  for i = first_name, #ARGV do
    local head = heads[i - first_name + 1]
    if head then
      local n = #ranges + 1
      ranges[n], pairs_of[n] = head, ARGV[i]
    end
  end
  ranges.pairs = pairs_of
  return ranges
end

-- The search both pop and peek take, from ARGV[first] on: limit, filter (to_lua JSON or ""),
-- scan budget, scan time limit in µs, the index that drives the search ("" = the queue
-- itself) and its values. Returns limit, matches(rec), budget, the driving ranges and the
-- decoded filter (the fair pop's, fair.lua).
local function search_args(first, now)
  local limit, filter, budget, index_name = tonumber(ARGV[first]), ARGV[first + 1], tonumber(ARGV[first + 2]), ARGV[first + 4]
  scan_deadline_us, passed_over, scan_expired = now + tonumber(ARGV[first + 3]), 0, false
  like_reset(LIKE_STEPS_PER_CALL)
  -- TIME costs ~1 µs: with a cheap filter the clock is read every 16th candidate passed
  -- over, with a costly one (its JSON is long) at every one.
  clock_every = math.max(1, math.floor(16 * 256 / (256 + #filter)))
  filter = filter ~= '' and decoded_filter(filter) or nil
  local ranges = {lex_range(K_QUEUE)}
  if index_name == 'pair' then
    ranges = pair_ranges(first + 5)
  elseif index_name ~= '' then
    ranges = {}
    for i = first + 5, #ARGV do
      ranges[#ranges + 1] = lex_range(IX[index_name], ARGV[i], index_name)
    end
  end
  -- Each step of the merge compares every range's head (best_head): with many ranges (a
  -- runner's 1,000 pairs, an `in` of 1,000 organisations) the candidates passed over are
  -- fewer, so steps x ranges stays at most 4,096 (1,000 pairs: 9 -> 3 ms of Redis per pop;
  -- a literal: the EVAL form of a script is at Lua's 200 locals of a main chunk).
  if #ranges > 1 then
    budget = math.min(budget, math.max(1, math.floor(4096 / #ranges)))
  end
  local function matches(rec)
    return filter == nil or (filter_match(filter, rec) and not data_unreadable(rec))
  end
  return limit, matches, budget, ranges, filter
end
