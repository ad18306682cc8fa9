--[[
  Read the best queued tasks that match a filter, without taking them.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1] limit
  ARGV[2] filter (redisched.filters.to_lua JSON), or "" for none
  ARGV[3] scan budget: how many non-matching candidates may be passed over
  ARGV[4] scan time limit in µs: passing over candidates stops once the call has run this long
  ARGV[5] index that drives the search ("" = the queue itself), ARGV[6..] its values

  Returns: {record, data, record, data, ...} (JSON), best first.
]]
--- @include "common"
--- @include "filter"
--- @include "candidates"

local limit, matches, budget, ranges = search_args(1, now_us())
local found = {}
scan(ranges, matches, budget, function(rec)
  local data = checked_data(rec)
  if data then
    found[#found + 1] = event_form(rec, stored_form(rec))
    found[#found + 1] = data
  end
  return #found < 2 * limit
end)
return found
