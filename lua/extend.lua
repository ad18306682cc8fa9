--[[
  Extend the lease of a dispatched or running task, for runners that heartbeat.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1] task id
  ARGV[2] lease token (must be the task's current one)
  ARGV[3] new lease length in ms, counted from now

  Returns: the new expiry in ms since the epoch, or E_NOT_FOUND / E_STALE_LEASE
]]
--- @include "common"

local rec = load_record(ARGV[1])
if not rec or redis.call('ZSCORE', K_LEASES, ARGV[1]) == false then
  return E_NOT_FOUND
end
if rec.lease ~= ARGV[2] then
  return E_STALE_LEASE
end
local expiry = math.floor(now_us() / 1000) + tonumber(ARGV[3])
redis.call('ZADD', K_LEASES, expiry, rec.id)
return expiry
