--[[
  Change a live task. Status is queue membership: to "queued" puts the task back on its
  queue, from "queued" takes it off; "dispatched"/"running" hold a lease, a finished status
  releases it. mula's runners send no token; a change that carries one must hold the
  task's current lease.

  Several patches of one partition may come in one call (queue/pipeliner.py merges
  concurrent ones): each runs in turn, on its own, as if called alone.

  KEYS: the queue's keys (redisched/queue/keys.py)
  ARGV[5k+1 .. 5k+5] the k-th patch (k = 0, 1, ... up to 256 patches):
  ARGV[1] task id
  ARGV[2] lease token, or "" for none
  ARGV[3] JSON object of record fields to set (status, priority with its pk, organisation,
          schedule_id, type, hash, created_at); "ix" entries are merged (null = drop);
          "data" (a JSON string) replaces the data
  ARGV[4] lease length in ms for "dispatched"
  ARGV[5] lease length in ms for "running"

  Returns: per patch, in order: {record JSON, data JSON} as stored, or an error code
    E_NOT_FOUND (not live in this queue), E_STALE_LEASE, E_CONFLICT (back to queued while
    a twin with the same hash is queued).
  Emits: op=patch rec=<record> [data=<data> when it changed]
]]
--- @include "common"

local function patch_one(args)
  local token, changes = args[2], cjson.decode(args[3])
  local now = now_us()
  local rec = load_record(args[1])
  if not rec then
    return E_NOT_FOUND
  end
  if token ~= '' and rec.lease ~= token then
    return E_STALE_LEASE
  end

  local new_data = changes.data
  changes.data = nil
  local before = {id = rec.id, hash = rec.hash, status = rec.status}
  local was_queued = rec.status == 'queued'
  if was_queued then
    dequeue(rec)
  end
  local status_only = true  -- then the record stays as sound as loaded (common.lua, vouch_for)
  for field, value in pairs(changes) do
    status_only = status_only and field == 'status'
    if field == 'ix' then
      for name, ix_value in pairs(value) do
        rec.ix[name] = is_set(ix_value) and ix_value or nil
      end
    else
      rec[field] = value
    end
  end
  rec.modified_at = us_string(now)

  if rec.status == 'queued' and queued_twin(rec) then
    if was_queued then
      enqueue(load_record(args[1]))
    end
    return E_CONFLICT
  end
  if rec.hash ~= before.hash then
    release_hash(before)
  end
  if rec.status == 'queued' then
    redis.call('ZREM', K_LEASES, rec.id)
    rec.lease = nil
    free_group(rec)
    enqueue(rec)
  elseif rec.status == 'dispatched' or rec.status == 'running' then
    hold_lease(rec, now, args[4], args[5])
  else
    redis.call('ZREM', K_LEASES, rec.id)
    rec.lease = nil
    free_group(rec)
    release_hash(rec)
  end
  local raw, stored_raw = save_record(rec, now, 'patch', new_data)
  if status_only and RECORD_STATUSES[rec.status] then
    vouch_for(stored_raw, rec.id)
  end
  if rec.status == 'failed' and before.status ~= 'failed' then
    count_bucket('fail', 1, now)
  end
  return {raw, new_data or load_data(rec.id)}
end

if #ARGV % 5 ~= 0 or #ARGV == 0 or #ARGV > 5 * 256 then
  return redis.error_reply('patch: ARGV must be 1 .. 256 patches of 5 arguments each')
end
local replies = {}
for at = 1, #ARGV, 5 do
  replies[#replies + 1] = patch_one({ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]})
end
finish(0, false)  -- the last rev handed out, written once for all the patches
return replies
