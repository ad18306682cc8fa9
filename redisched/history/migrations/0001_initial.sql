-- redisched history: finished (and, written behind, live) tasks, schedules, and the
-- per-group task counts the UI's `limit=0` counts are answered from.

CREATE TABLE schedules (
    id           uuid PRIMARY KEY,
    scheduler_id text        NOT NULL,
    organisation text        NOT NULL,
    hash         text        NOT NULL,
    data         jsonb       NOT NULL,
    enabled      boolean     NOT NULL DEFAULT true,
    schedule     text,
    deadline_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    modified_at  timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX schedules_hash_key ON schedules (hash);
CREATE INDEX schedules_due_idx ON schedules (scheduler_id, deadline_at) WHERE enabled AND deadline_at IS NOT NULL;
CREATE INDEX schedules_scheduler_created_idx ON schedules (scheduler_id, created_at DESC);
CREATE INDEX schedules_organisation_created_idx ON schedules (organisation, created_at DESC);
CREATE INDEX schedules_created_idx ON schedules (created_at DESC);
CREATE INDEX schedules_deadline_idx ON schedules (deadline_at);
-- The UI finds a report recipe's schedule by data (filters.to_sql's form, see tasks below).
CREATE INDEX schedules_report_recipe_idx ON schedules ((COALESCE(data -> 'report_recipe_id', 'null'::jsonb)));

-- schedule_id has no foreign key: the snapshotter writes tasks behind Redis, and a task's
-- record may still name a schedule deleted meanwhile. The upsert keeps schedule_id only when
-- the schedule exists, and deleting a schedule nulls its tasks' schedule_id explicitly.
CREATE TABLE tasks (
    id           uuid PRIMARY KEY,
    scheduler_id text        NOT NULL,
    schedule_id  uuid,
    organisation text        NOT NULL,
    priority     bigint      NOT NULL,
    status       text        NOT NULL,
    type         text        NOT NULL,
    hash         text,
    data         jsonb       NOT NULL,
    created_at   timestamptz NOT NULL,
    modified_at  timestamptz NOT NULL,
    tries        integer     NOT NULL DEFAULT 0,
    rev          bigint      NOT NULL DEFAULT 0
);

CREATE INDEX tasks_scheduler_created_idx ON tasks (scheduler_id, created_at DESC);
CREATE INDEX tasks_status_created_idx ON tasks (status, created_at DESC);
CREATE INDEX tasks_organisation_created_idx ON tasks (organisation, created_at DESC);
CREATE INDEX tasks_type_created_idx ON tasks (type, created_at DESC);
CREATE INDEX tasks_created_idx ON tasks (created_at DESC);
-- stats: a range on modified_at answered from the index alone.
CREATE INDEX tasks_modified_idx ON tasks (modified_at) INCLUDE (scheduler_id, organisation, status);
CREATE INDEX tasks_hash_created_idx ON tasks (hash, created_at DESC);
CREATE INDEX tasks_schedule_idx ON tasks (schedule_id) WHERE schedule_id IS NOT NULL;
-- The data paths the UI and the schedulers filter on, in the form filters.to_sql writes
-- (COALESCE(data -> key -> key, 'null')). No GIN index on all of data: it is the costliest
-- index to keep up on every snapshot batch, for a filter (@> on all of data) nobody sends.
CREATE INDEX tasks_boefje_id_idx ON tasks ((COALESCE(data -> 'boefje' -> 'id', 'null'::jsonb)));
CREATE INDEX tasks_input_ooi_idx ON tasks ((COALESCE(data -> 'input_ooi', 'null'::jsonb)));
CREATE INDEX tasks_normalizer_id_idx ON tasks ((COALESCE(data -> 'normalizer' -> 'id', 'null'::jsonb)));
CREATE INDEX tasks_raw_input_ooi_idx
    ON tasks ((COALESCE(data -> 'raw_data' -> 'boefje_meta' -> 'input_ooi', 'null'::jsonb)));
CREATE INDEX tasks_raw_boefje_meta_idx
    ON tasks ((COALESCE(data -> 'raw_data' -> 'boefje_meta' -> 'id', 'null'::jsonb)));
CREATE INDEX tasks_report_recipe_idx ON tasks ((COALESCE(data -> 'report_recipe_id', 'null'::jsonb)));

-- Task counts per (scheduler, organisation, type, status), kept exact by statement-level
-- triggers in the writing transaction: a count by any of these columns reads a few rows
-- instead of the tasks table.
CREATE TABLE task_counts (
    scheduler_id text   NOT NULL,
    organisation text   NOT NULL,
    type         text   NOT NULL,
    status       text   NOT NULL,
    n            bigint NOT NULL,
    PRIMARY KEY (scheduler_id, organisation, type, status)
);

-- Adds (+1 per new row, -1 per old row) to the counts. Rows are upserted in key order, so
-- concurrent writers lock count rows in the same order and never deadlock on them.
CREATE FUNCTION task_counts_follow() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_counts AS c (scheduler_id, organisation, type, status, n)
        SELECT scheduler_id, organisation, type, status, count(*)
        FROM new_rows GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (scheduler_id, organisation, type, status) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO task_counts AS c (scheduler_id, organisation, type, status, n)
        SELECT scheduler_id, organisation, type, status, sum(delta)
        FROM (
            SELECT scheduler_id, organisation, type, status, 1 AS delta FROM new_rows
            UNION ALL
            SELECT scheduler_id, organisation, type, status, -1 FROM old_rows
        ) AS changes
        GROUP BY 1, 2, 3, 4 HAVING sum(delta) <> 0 ORDER BY 1, 2, 3, 4
        ON CONFLICT (scheduler_id, organisation, type, status) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSE
        INSERT INTO task_counts AS c (scheduler_id, organisation, type, status, n)
        SELECT scheduler_id, organisation, type, status, -count(*)
        FROM old_rows GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (scheduler_id, organisation, type, status) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_count_inserts AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION task_counts_follow();
CREATE TRIGGER tasks_count_updates AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION task_counts_follow();
CREATE TRIGGER tasks_count_deletes AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION task_counts_follow();
