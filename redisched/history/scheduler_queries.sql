-- name: latest_by_hash
-- The newest task of each hash (by created_at), through tasks_hash_created_idx.
SELECT h.hash, t.id, t.status, t.modified_at
FROM unnest(%s::text[]) AS h(hash)
CROSS JOIN LATERAL (
    SELECT id, status, modified_at FROM tasks
    WHERE tasks.hash = h.hash
    ORDER BY created_at DESC
    LIMIT 1
) AS t;

-- name: set_deadlines
-- Moves the deadline of the given schedules (a claim, or a postponement).
UPDATE schedules SET deadline_at = %s, modified_at = now() WHERE id = ANY(%s);
