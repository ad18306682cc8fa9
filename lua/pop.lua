--[[
  Pop the best queued tasks that match a filter: mark them dispatched, lease them and emit
  an event, in one step, so no task is ever handed out twice.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1] lease token for this pop
  ARGV[2] "1" for the boefje rule: the best matching task that has a deduplication key
          brings its batch (same key, up to limit); without one, at most one task is popped
  ARGV[3] lease length in ms
  ARGV[4] limit: the most tasks to return
  ARGV[5] filter (redisched.filters.to_lua JSON), or "" for none
  ARGV[6] scan budget: how many non-matching candidates may be passed over
  ARGV[7] index that drives the search ("" = the queue itself), ARGV[8..] its values

  Returns: {record, data, record, data, ...} of the popped tasks (JSON), best first;
  empty when none matched.
  Emits: op=pop rec=<record> per task
]]
--- @include "common"
--- @include "filter"
--- @include "candidates"

local token, dedup_batches, lease_ms = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
local limit, matches, budget, ranges = search_args(4)
local now = now_us()
local popped = {}

local function dispatch(rec)
  dequeue(rec)
  rec.status = 'dispatched'
  rec.modified_at = us_string(now)
  rec.lease = token
  set_lease(rec.id, now, lease_ms)
  popped[#popped + 1] = save_record(rec, now, 'pop')
  popped[#popped + 1] = load_data(rec.id)
  return #popped < 2 * limit
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
  scan(ranges, matches, budget, true, dispatch)
end
finish(now, #popped > 0)
return popped
