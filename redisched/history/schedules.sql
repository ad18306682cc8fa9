-- name: insert
INSERT INTO schedules (id, scheduler_id, organisation, hash, data, enabled, schedule, deadline_at,
                       created_at, modified_at)
VALUES (%(id)s, %(scheduler_id)s, %(organisation)s, %(hash)s, %(data)s, %(enabled)s, %(schedule)s,
        %(deadline_at)s, %(created_at)s, %(modified_at)s)
RETURNING id, scheduler_id, organisation, hash, data, enabled, schedule, deadline_at, created_at,
          modified_at;

-- name: get
SELECT id, scheduler_id, organisation, hash, data, enabled, schedule, deadline_at, created_at,
       modified_at
FROM schedules WHERE id = %s;

-- name: get_for_update
SELECT id, scheduler_id, organisation, hash, data, enabled, schedule, deadline_at, created_at,
       modified_at
FROM schedules WHERE id = %s FOR UPDATE;

-- name: mirror_entry
SELECT id, enabled FROM schedules WHERE hash = %s;

-- name: select
-- A page of schedules, newest first, filtered by the WHERE clause the store builds.
SELECT id, scheduler_id, organisation, hash, data, enabled, schedule, deadline_at, created_at,
       modified_at
FROM schedules {where}
ORDER BY created_at DESC
OFFSET %s LIMIT %s;

-- name: count
SELECT count(*) FROM schedules {where};

-- name: update
-- Sets the given columns.
UPDATE schedules SET {assignments}, modified_at = now()
WHERE id = %s
RETURNING id, scheduler_id, organisation, hash, data, enabled, schedule, deadline_at, created_at,
          modified_at;

-- name: delete
DELETE FROM schedules WHERE id = %s RETURNING scheduler_id, hash;

-- name: detach_tasks
-- Unlinks a deleted schedule's tasks (as mula's ON DELETE SET NULL); answers the live ones,
-- which Redis holds too.
WITH detached AS (
    UPDATE tasks SET schedule_id = NULL WHERE schedule_id = %s RETURNING scheduler_id, id, status
)
SELECT scheduler_id, id::text FROM detached WHERE status IN ('queued', 'dispatched', 'running');

-- name: due
-- Enabled schedules whose deadline has passed, most overdue first, locked for the caller's
-- transaction; rows another transaction holds are skipped, so workers split the work.
SELECT id, scheduler_id, organisation, hash, data, enabled, schedule, deadline_at, created_at,
       modified_at
FROM schedules
WHERE scheduler_id = %s AND enabled AND deadline_at <= %s
ORDER BY deadline_at
LIMIT %s
FOR UPDATE SKIP LOCKED;

-- name: set_deadline
UPDATE schedules SET deadline_at = %s, modified_at = now() WHERE id = %s;

-- name: insert_pushed
-- Schedules created by pushes (event sched=new), from their task records (a JSON array);
-- one that already exists, by id or by hash, is left alone.
INSERT INTO schedules (id, scheduler_id, organisation, hash, data, enabled, created_at, modified_at)
SELECT r.schedule_id, r.scheduler_id, r.organisation, r.hash, r.data::jsonb, true,
       us_to_timestamptz(r.created_at),
       us_to_timestamptz(r.created_at)
FROM json_to_recordset(%s::json) AS r(schedule_id uuid, scheduler_id text, organisation text,
                                      hash text, data text, created_at bigint)
ORDER BY r.schedule_id
ON CONFLICT DO NOTHING;

-- name: lock_linked
-- The enabled schedules pushes linked to, locked in id order (no deadlocks between batches).
SELECT id, scheduler_id, schedule FROM schedules
WHERE id = ANY(%s) AND enabled
ORDER BY id
FOR NO KEY UPDATE;

-- name: set_deadlines
UPDATE schedules AS s SET deadline_at = v.deadline_at, modified_at = now()
FROM unnest(%s::uuid[], %s::timestamptz[]) AS v(id, deadline_at)
WHERE s.id = v.id;

-- name: mirror_entries
SELECT hash, id, enabled FROM schedules WHERE scheduler_id = %s;
