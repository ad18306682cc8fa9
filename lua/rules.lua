--[[
  Replace the limit rules a queue partition follows (REDISCHED_LIMITS, PUT /limits): each
  rule's spec under its key, the specs of rules no longer in force removed (their groups
  have no limit from now on), and the version, in one step. Groups name their rule's key, so
  the new limits hold for groups already holding tasks from their next decision on; the
  groups the partition remembers (K_LIMGROUPS, the latest pushed) are marked due in
  K_LIMWAKE, so the next pops recheck them (WAKE_PER_CALL a pop) and a group the new rules
  open goes at once. Work: the rules, and one ZUNIONSTORE in C over at most
  LIMIT_GROUPS_KEPT groups; never a walk over groups or tasks here.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[1] the rules version (Redis time in µs when they were set)
  ARGV[2..] pairs of rule key, spec "<spacing ms>,<concurrency>"

  Returns: 1, or 0 when the partition already follows a newer version (nothing changed)
]]
--- @include "common"

local version = ARGV[1]
-- a version or list that is not what this script writes (written by hand) counts as none
local followed = tonumber(redis.call('HGET', K_LIMITS, NUL .. 'version') or '')
if followed and followed > tonumber(version) then
  return 0
end
local listed = redis.call('HGET', K_LIMITS, NUL .. 'rules')
local decoded, old_keys = pcall(cjson.decode, listed or '[]')
for _, key in ipairs(decoded and type(old_keys) == 'table' and old_keys or {}) do
  if type(key) == 'string' then
    redis.call('HDEL', K_LIMITS, NUL .. 'rule' .. NUL .. key)
  end
end
local keys = {}
for i = 2, #ARGV, 2 do
  keys[#keys + 1] = ARGV[i]
  redis.call('HSET', K_LIMITS, NUL .. 'rule' .. NUL .. ARGV[i], ARGV[i + 1])
end
local list = #keys > 0 and cjson.encode(keys) or '[]'
redis.call('HSET', K_LIMITS, NUL .. 'version', version, NUL .. 'rules', list)
redis.call('ZUNIONSTORE', K_LIMWAKE, 2, K_LIMWAKE, K_LIMGROUPS, 'WEIGHTS', 1, 0, 'AGGREGATE', 'MIN')
return 1
