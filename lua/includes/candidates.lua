-- Walks queued tasks in queue order over one or more lex ranges (the queue itself, or the
-- slices of an index for the values a filter asks for), merging them like a k-way merge.
-- Each step is one ZRANGE ... BYLEX LIMIT: O(log N), whatever the queue depth.

local ORDER_ID_START = ORDER_PRIORITY_WIDTH + 16 + 1  -- priority key, created_at, id

local function lex_range(key, value)
  if value == nil then
    return {key = key, min = '-', max = '+', skip = 0, offset = 0}
  end
  return {key = key, min = '[' .. value .. NUL, max = '(' .. value .. '\1', skip = #value + 1, offset = 0}
end

local function range_head(range)
  if range.head == nil then
    local members = redis.call('ZRANGE', range.key, range.min, range.max, 'BYLEX', 'LIMIT', range.offset, 1)
    range.head = members[1] and string.sub(members[1], range.skip + 1) or false
  end
  return range.head
end

local function best_head(ranges)
  local best, best_range = nil, nil
  for _, range in ipairs(ranges) do
    local head = range_head(range)
    if head and (best == nil or head < best) then
      best, best_range = head, range
    end
  end
  return best, best_range
end

-- Hands each matching candidate to take(rec) in queue order until take returns false, the
-- ranges run dry, or `budget` candidates have been passed over. When take removes the task
-- from the queue (`removes`), the next candidate moves up to the same offset.
local function scan(ranges, matches, budget, removes, take)
  while true do
    local order, range = best_head(ranges)
    if not order then
      return
    end
    range.head = nil
    local rec = load_record(string.sub(order, ORDER_ID_START))
    if rec and matches(rec) then
      if not removes then
        range.offset = range.offset + 1
      end
      if not take(rec) then
        return
      end
    else
      range.offset = range.offset + 1
      budget = budget - 1
      if budget <= 0 then
        return
      end
    end
  end
end

-- The search both pop and peek take, from ARGV[first] on: limit, filter (to_lua JSON or ""),
-- scan budget, the index that drives the search ("" = the queue itself) and its values.
local function search_args(first)
  local limit, filter, budget, index_name = tonumber(ARGV[first]), ARGV[first + 1], tonumber(ARGV[first + 2]), ARGV[first + 3]
  filter = filter ~= '' and cjson.decode(filter) or nil
  local ranges = {lex_range(K_QUEUE)}
  if index_name ~= '' then
    ranges = {}
    for i = first + 4, #ARGV do
      ranges[#ranges + 1] = lex_range(IX[index_name], ARGV[i])
    end
  end
  local function matches(rec)
    return filter == nil or filter_match(filter, rec)
  end
  return limit, matches, budget, ranges
end
