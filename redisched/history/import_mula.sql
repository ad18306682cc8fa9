-- name: mula_revision
-- The alembic revision of a mula database (mula v1.20: 0010).
SELECT version_num FROM alembic_version;

-- name: mula_schedules
-- Every schedule of a mula v1.20 database, oldest first.
SELECT id, scheduler_id, organisation, hash, data::text, enabled, schedule, deadline_at,
       created_at, modified_at
FROM schedules
ORDER BY created_at, id;

-- name: mula_tasks
-- Every task of a mula v1.20 database, oldest first, with its schedule's hash (a schedule
-- redisched already had under another id is found by it). status is the enum's name
-- (QUEUED, ...), as SQLAlchemy writes a Python Enum.
SELECT t.id, t.scheduler_id, t.schedule_id, s.hash AS schedule_hash, t.organisation, t.priority,
       t.status::text, t.type, t.hash, t.data::text, t.created_at, t.modified_at
FROM tasks AS t LEFT JOIN schedules AS s ON s.id = t.schedule_id
ORDER BY t.created_at, t.id;

-- name: insert_schedules
-- A batch of schedules (a JSON array); one redisched already has, by id or by hash, is left
-- alone. Returns one row per schedule inserted.
INSERT INTO schedules (id, scheduler_id, organisation, hash, data, enabled, schedule, deadline_at,
                       created_at, modified_at)
SELECT r.id, r.scheduler_id, r.organisation, r.hash, r.data, r.enabled, r.schedule, r.deadline_at,
       r.created_at, r.modified_at
FROM json_to_recordset(%s::json) AS r(id uuid, scheduler_id text, organisation text, hash text,
                                      data jsonb, enabled boolean, schedule text,
                                      deadline_at timestamptz, created_at timestamptz,
                                      modified_at timestamptz)
ORDER BY r.id
ON CONFLICT DO NOTHING
RETURNING id;

-- name: insert_tasks
-- A batch of tasks (a JSON array) at rev 0, so that any change redisched makes later wins;
-- one redisched already has is left alone. A task keeps its schedule when redisched has it,
-- by id or else by the schedule's hash. Returns the status of each task inserted.
INSERT INTO tasks AS t (id, scheduler_id, schedule_id, organisation, priority, status, type, hash,
                        data, created_at, modified_at, tries, rev)
SELECT r.id, r.scheduler_id, COALESCE(by_id.id, by_hash.id), r.organisation, r.priority, r.status,
       r.type, r.hash, r.data, r.created_at, r.modified_at, 0, 0
FROM json_to_recordset(%s::json) AS r(id uuid, scheduler_id text, schedule_id uuid,
                                      schedule_hash text, organisation text, priority bigint,
                                      status text, type text, hash text, data jsonb,
                                      created_at timestamptz, modified_at timestamptz)
LEFT JOIN schedules AS by_id ON by_id.id = r.schedule_id
LEFT JOIN schedules AS by_hash ON by_hash.hash = r.schedule_hash
ORDER BY r.id
ON CONFLICT (id) DO NOTHING
RETURNING t.status;
