--[[
  Store the limit rules in force (PUT /limits, REDISCHED_LIMITS at start) under a version
  that only grows: the caller's clock, or one past the stored version when that is not
  above it, so concurrent replaces are ordered here and every partition ends on the last.

  KEYS[1] <p>:limits:rules (HASH version, rules, source), the only key (not a queue's: the
          preamble's first key local, K_QUEUE, points at it)
  ARGV[1] the caller's clock in µs
  ARGV[2] the rules (JSON list), ARGV[3] their source ("env" or "admin")

  Returns: the version given to them (a decimal string)
]]
local rules_key = K_QUEUE
local stored = tonumber(redis.call('HGET', rules_key, 'version') or '0') or 0  -- not a number: none
local version = string.format('%d', math.max(tonumber(ARGV[1]), stored + 1))
redis.call('HSET', rules_key, 'version', version, 'rules', ARGV[2], 'source', ARGV[3])
return version
