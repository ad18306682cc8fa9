-- name: upsert
-- A batch of task records (a JSON array, one record per task) into tasks; a stored row is
-- only replaced by a record with a higher rev. schedule_id is kept only when that schedule
-- exists. Rows go in id order, so concurrent batches lock them in the same order. A record
-- whose event did not change the data has none: JSON null stands in (NOT NULL is checked
-- before ON CONFLICT) and the stored data stays.
INSERT INTO tasks AS t (id, scheduler_id, schedule_id, organisation, priority, status, type, hash,
                        data, created_at, modified_at, tries, rev)
SELECT r.id, r.scheduler_id, s.id, r.organisation, r.priority, r.status, r.type, r.hash,
       COALESCE(r.data::jsonb, 'null'::jsonb),
       us_to_timestamptz(r.created_at),
       us_to_timestamptz(r.modified_at),
       COALESCE(r.tries, 0), r.rev
FROM json_to_recordset(%s::json) AS r(id uuid, scheduler_id text, schedule_id uuid,
                                      organisation text, priority bigint, status text,
                                      type text, hash text, data text, created_at bigint,
                                      modified_at bigint, tries integer, rev bigint)
LEFT JOIN schedules AS s ON s.id = r.schedule_id
ORDER BY r.id
ON CONFLICT (id) DO UPDATE SET
    scheduler_id = EXCLUDED.scheduler_id, schedule_id = EXCLUDED.schedule_id,
    organisation = EXCLUDED.organisation, priority = EXCLUDED.priority,
    status = EXCLUDED.status, type = EXCLUDED.type, hash = EXCLUDED.hash,
    data = CASE WHEN EXCLUDED.data = 'null'::jsonb THEN t.data ELSE EXCLUDED.data END,
    created_at = EXCLUDED.created_at, modified_at = EXCLUDED.modified_at,
    tries = EXCLUDED.tries, rev = EXCLUDED.rev
WHERE t.rev < EXCLUDED.rev;

-- name: get
SELECT id, scheduler_id, schedule_id, organisation, priority, status, type, hash, data::text,
       created_at, modified_at
FROM tasks WHERE id = %s;

-- name: select
-- A page of tasks, newest first, filtered by the WHERE clause the store builds.
SELECT id, scheduler_id, schedule_id, organisation, priority, status, type, hash, data::text,
       created_at, modified_at
FROM tasks {where}
ORDER BY created_at DESC
OFFSET %s LIMIT %s;

-- name: count
SELECT count(*) FROM tasks {where};

-- name: count_from_counters
-- The same count, from the trigger-maintained task_counts, when the filters are only on
-- scheduler_id, organisation, type and status.
SELECT coalesce(sum(n), 0)::bigint FROM task_counts {where};

-- name: status_counts
SELECT scheduler_id, status, sum(n)::bigint FROM task_counts GROUP BY 1, 2 ORDER BY 1, 2;

-- name: stats
-- Tasks modified in the last 24 hours, per UTC hour of modified_at and status.
SELECT date_trunc('hour', modified_at, 'UTC') AS hour, status, count(*)
FROM tasks
WHERE modified_at >= now() - interval '24 hours'
  AND (%(scheduler_id)s::text IS NULL OR scheduler_id = %(scheduler_id)s)
  AND (%(organisation)s::text IS NULL OR organisation = %(organisation)s)
GROUP BY 1, 2
ORDER BY 1 DESC;

-- name: live
-- The tasks Redis should hold (reconciliation after Redis lost data), oldest first.
SELECT id, scheduler_id, schedule_id, organisation, priority, status, type, hash, data::text,
       created_at, modified_at, tries, rev
FROM tasks
WHERE scheduler_id = %s AND status IN ('queued', 'dispatched', 'running')
ORDER BY created_at;

-- name: patch
-- Sets the given columns and moves modified_at (as a live task's PATCH does); rev moves on,
-- so a replayed older event cannot undo it.
UPDATE tasks SET {assignments}, rev = rev + 1, modified_at = clock_timestamp()
WHERE id = %s
RETURNING id, scheduler_id, schedule_id, organisation, priority, status, type, hash, data::text,
          created_at, modified_at;

-- name: served_by_organisation
-- The dashboard's share served: per scheduler and organisation (of those asked for), how
-- many tasks were handed out (dispatched, running, completed or failed), from the counters.
SELECT scheduler_id, organisation, sum(n)::bigint FROM task_counts
WHERE organisation = ANY(%s) AND status IN ('dispatched', 'running', 'completed', 'failed')
GROUP BY 1, 2;

-- name: record_history
-- One row per event of a snapshot batch (a JSON array); replays are ignored.
INSERT INTO task_history (task_id, rev, op, status, at)
SELECT e.id, e.rev, e.op, e.status, us_to_timestamptz(e.modified_at)
FROM json_to_recordset(%s::json) AS e(id uuid, rev bigint, op text, status text, modified_at bigint)
ORDER BY e.id, e.rev
ON CONFLICT DO NOTHING;

-- name: history
-- A task's changes, oldest first (at most the given number, the newest ones).
SELECT op, status, at FROM (
    SELECT rev, op, status, at FROM task_history WHERE task_id = %s ORDER BY rev DESC LIMIT %s
) AS newest ORDER BY rev;
