-- 0003_task_status_history: every change of a task, as the snapshotter applies it.
--
-- tasks keeps a task's latest version only; this keeps each version's status, what changed
-- it (push, pop, patch, reap) and when, for the dashboard's status history. One row per
-- event; a replayed event (same task, same rev) is ignored. Read by task id only.

CREATE TABLE task_history (
    task_id uuid        NOT NULL,
    rev     bigint      NOT NULL,
    op      text        NOT NULL,
    status  text        NOT NULL,
    at      timestamptz NOT NULL,
    PRIMARY KEY (task_id, rev)
);
