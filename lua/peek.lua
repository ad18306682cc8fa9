--[[
  Read the best queued tasks that match a filter, without taking them.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1] limit
  ARGV[2] filter (redisched.filters.to_lua JSON), or "" for none
  ARGV[3] scan budget: how many non-matching candidates may be passed over
  ARGV[4] index that drives the search ("" = the queue itself), ARGV[5..] its values

  Returns: an array of records (JSON), best first.
]]
--- @include "common"
--- @include "filter"
--- @include "candidates"

local limit = tonumber(ARGV[1])
local filter = ARGV[2] ~= '' and cjson.decode(ARGV[2]) or nil
local budget, index_name = tonumber(ARGV[3]), ARGV[4]
local found = {}

local ranges = {lex_range(K_QUEUE)}
if index_name ~= '' then
  ranges = {}
  for i = 5, #ARGV do
    ranges[#ranges + 1] = lex_range(IX[index_name], ARGV[i])
  end
end

scan(ranges, function(rec)
  return filter == nil or filter_match(filter, rec)
end, budget, false, function(rec)
  found[#found + 1] = cjson.encode(rec)
  return #found < limit
end)
return found
