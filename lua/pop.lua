--[[
  Pop the best queued tasks that match a filter: mark them dispatched, lease them and emit
  an event, in one step, so no task is ever handed out twice. Several identical pop
  requests (an API process merges concurrent ones) are served one after the other, each
  with its own lease token, as if they had come in one by one.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1] the requests' lease tokens, comma separated: one request per token
  ARGV[2] "1" for the boefje rule: the best matching task that has a deduplication key
          brings its batch (same key, up to limit); without one, at most one task is popped
  ARGV[3] the status the popped tasks get: "dispatched" (a runner patches "running" when it
          starts, as mula's do) or "running" (a worker that starts at once: one call fewer)
  ARGV[4] lease length in ms
  ARGV[5] limit: the most tasks to return
  ARGV[6] filter (redisched.filters.to_lua JSON), or "" for none
  ARGV[7] scan budget: how many non-matching candidates may be passed over
  ARGV[8] scan time limit in µs: passing over candidates stops once the call has run this long
  ARGV[9] index that drives the search ("" = the queue itself), ARGV[10..] its values

  Returns: per request, in token order: its count n, then n pairs record, data (JSON) of
  its tasks, best first: {n1, rec, data, ..., n2, rec, data, ...}.
  Emits: op=pop rec=<record> per task
]]
--- @include "common"
--- @include "filter"
--- @include "candidates"
--- @include "fair"

local dedup_batches, popped_status, lease_ms = ARGV[2] == '1', ARGV[3], tonumber(ARGV[4])
if popped_status ~= 'dispatched' and popped_status ~= 'running' then
  return redis.error_reply('pop: ARGV[3] must be "dispatched" or "running"')
end
local now = now_us()
wake_groups()
local request_limit, matches, budget, ranges, filter = search_args(5, now)
local replies, token, limit, taken = {}, nil, nil, 0

local function dispatch(rec)
  local data = checked_data(rec)
  dequeue(rec)
  if not data then
    return true  -- moved aside (common.lua): on to the next
  end
  spend_group(rec)
  rec.status = popped_status
  rec.modified_at = us_string(now)
  rec.lease = token
  set_lease(rec.id, now, lease_ms)
  local event_raw, stored_raw = save_record(rec, now, 'pop')
  vouch_for(stored_raw, rec.id)
  replies[#replies + 1] = event_raw
  replies[#replies + 1] = data
  taken = taken + 1
  return taken < limit
end

local function pop_dedup_batch()
  if redis.call('ZCARD', K_DEDUPQ) == 0 then
    return false
  end
  local key = nil
  scan({lex_range(K_DEDUPQ, nil, 'dedup')}, matches, budget, function(rec)
    key = rec.ix.dedup
    return false
  end)
  if key == nil then
    return false
  end
  scan({lex_range(IX.dedup, key, 'dedup')}, matches, budget, dispatch)
  return true
end

-- With fairness on (fair.lua); tasks its structures do not hold (queued before it was turned
-- on) are still found by the plain search when it finds nothing.
local function serve_fairly()
  fair.pop({
    filter = filter, ranges = built_ranges(ranges), matches = matches,
    budget = budget, dedup = dedup_batches, limit = limit, dispatch = dispatch,
    taken = function() return taken end,
  })
  return taken > 0
end

local function serve(request_token)
  token, limit, taken = request_token, request_limit, 0
  local count_at = #replies + 1
  replies[count_at] = 0
  if fair.on and serve_fairly() then
    -- served
  elseif not (dedup_batches and pop_dedup_batch()) then
    if dedup_batches then
      limit = 1
    end
    scan(ranges, matches, budget, dispatch)
  end
  replies[count_at] = taken
  return taken
end

local served = 0
for request_token in string.gmatch(ARGV[1], '[^,]+') do
  served = served + serve(request_token)
end
if served > 0 then
  count_bucket('pop', served, now)
end
if fair.on then
  fair.flush()
end
finish(now, served > 0)
return replies
