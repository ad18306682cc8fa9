--[[
  Pop the best queued tasks that match a filter: mark them dispatched, lease them and emit
  an event, in one step, so no task is ever handed out twice.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1] lease token for this pop
  ARGV[2] limit: the most tasks to return
  ARGV[3] "1" for the boefje rule: the best matching task that has a deduplication key
          brings its batch (same key, up to limit); without one, at most one task is popped
  ARGV[4] filter (redisched.filters.to_lua JSON), or "" for none
  ARGV[5] lease length in ms
  ARGV[6] scan budget: how many non-matching candidates may be passed over
  ARGV[7] index that drives the search ("" = the queue itself), ARGV[8..] its values

  Returns: an array of the popped records (JSON), best first; empty when none matched.
  Emits: op=pop rec=<record> per task
]]
--- @include "common"
--- @include "filter"
--- @include "candidates"

local token, limit, dedup_batches = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local filter = ARGV[4] ~= '' and cjson.decode(ARGV[4]) or nil
local lease_ms, budget, index_name = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local now = now_us()
local popped = {}

local function matches(rec)
  return filter == nil or filter_match(filter, rec)
end

local function dispatch(rec)
  dequeue(rec)
  rec.status = 'dispatched'
  rec.modified_at = us_string(now)
  rec.lease = token
  set_lease(rec.id, now, lease_ms)
  popped[#popped + 1] = save_record(rec, now, 'pop')
  return #popped < limit
end

local function driving_ranges()
  if index_name == '' then
    return {lex_range(K_QUEUE)}
  end
  local ranges = {}
  for i = 8, #ARGV do
    ranges[#ranges + 1] = lex_range(IX[index_name], ARGV[i])
  end
  return ranges
end

local function pop_dedup_batch()
  if redis.call('ZCARD', K_DEDUPQ) == 0 then
    return false
  end
  local key = nil
  scan({lex_range(K_DEDUPQ)}, matches, budget, false, function(rec)
    key = rec.ix.dedup
    return false
  end)
  if key == nil then
    return false
  end
  scan({lex_range(IX.dedup, key)}, matches, budget, true, dispatch)
  return true
end

if not (dedup_batches and pop_dedup_batch()) then
  if dedup_batches then
    limit = 1
  end
  scan(driving_ranges(), matches, budget, true, dispatch)
end
finish(now, #popped > 0)
return popped
