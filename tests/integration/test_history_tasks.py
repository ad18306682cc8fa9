"""TaskStore on a real Postgres: rev-guarded batch upserts, listing, counting and stats."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import msgspec
import pytest

from redisched.errors import BadRequest, NotFound
from redisched.history.tasks import Event, TaskStore
from redisched.models import STATUSES, TaskStatus, datetime_to_us, us_to_datetime
from redisched.queue.records import TaskRecord, priority_key


@pytest.fixture
def org() -> str:
    """An organisation no other test uses: the database is shared by the session."""
    return f"org-{uuid.uuid4().hex[:8]}"


def boefje_record(org: str, *, status: str = "queued", rev: int = 1, created_us: int | None = None, **fields) -> TaskRecord:
    task_id = fields.pop("id", str(uuid.uuid4()))
    created_us = created_us or int(time.time() * 1_000_000)
    data = {"id": task_id, "boefje": {"id": "dns-records"}, "input_ooi": f"Hostname|internet|{task_id}", "organization": org}
    return TaskRecord(
        id=task_id,
        scheduler_id="boefje",
        organisation=org,
        priority=str(fields.pop("priority", 10)),
        status=status,
        type="boefje",
        hash=uuid.uuid4().hex,
        data=msgspec.json.encode(data).decode(),
        created_at=str(created_us),
        modified_at=str(created_us + rev),
        pk=priority_key(10),
        rev=str(rev),
        **fields,
    )


def changed(record: TaskRecord, status: str, rev: int) -> TaskRecord:
    return msgspec.structs.replace(record, status=status, rev=str(rev), modified_at=str(int(record.created_at) + rev))


async def test_apply_keeps_the_highest_rev_whatever_the_order(pool, org):
    store = TaskStore(pool)
    pushed = boefje_record(org)
    popped, done = changed(pushed, "dispatched", 2), changed(pushed, "completed", 3)

    await store.apply([Event("patch", done, None), Event("push", pushed, None)])
    await store.apply([Event("pop", popped, None)])
    await store.apply([Event("push", pushed, None), Event("patch", done, None), Event("pop", popped, None)])

    task = await store.get(pushed.id)
    assert task.status is TaskStatus.COMPLETED
    assert task.modified_at == us_to_datetime(int(done.modified_at))


async def test_apply_round_trips_every_field(pool, org):
    store = TaskStore(pool)
    record = boefje_record(org, priority=-(2**62), status="queued")

    await store.apply([Event("push", record, None)])

    stored, expected = await store.get(record.id), record.to_task()
    assert msgspec.json.decode(stored.data) == msgspec.json.decode(record.data)  # jsonb orders keys its way
    assert msgspec.structs.replace(stored, data=expected.data) == expected


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00.000001Z", "2300-06-15T12:34:56.789123Z", "9999-12-31T23:59:59.999999Z"])
async def test_times_at_the_ends_of_the_calendar_are_stored_to_the_microsecond(pool, org, when):
    us = datetime_to_us(msgspec.json.decode(f'"{when}"', type=datetime))
    record = msgspec.structs.replace(boefje_record(org, created_us=us), modified_at=str(us))
    await TaskStore(pool).apply([Event("push", record, None)])
    stored = await TaskStore(pool).get(record.id)
    assert datetime_to_us(stored.created_at) == datetime_to_us(stored.modified_at) == us


async def test_apply_drops_a_schedule_id_that_names_no_schedule(pool, org):
    store = TaskStore(pool)
    record = boefje_record(org, schedule_id=str(uuid.uuid4()))

    await store.apply([Event("push", record, None)])

    assert (await store.get(record.id)).schedule_id is None


async def test_get_unknown_task_is_none(pool):
    assert await TaskStore(pool).get(uuid.uuid4()) is None


async def test_list_pages_newest_first_with_the_total_count(pool, org):
    store = TaskStore(pool)
    start = int(time.time() * 1_000_000)
    records = [boefje_record(org, created_us=start + i) for i in range(7)]
    await store.apply([Event("push", r, None) for r in records])

    count, first = await store.list(organisation=org, offset=0, limit=3)
    _, last = await store.list(organisation=org, offset=6, limit=3)

    assert count == 7
    assert [t.id for t in first] == [uuid.UUID(r.id) for r in reversed(records[-3:])]
    assert [t.id for t in last] == [uuid.UUID(records[0].id)]


async def test_list_filters_on_columns_and_created_at_bounds(pool, org):
    store = TaskStore(pool)
    start = int(time.time() * 1_000_000)
    records = [boefje_record(org, created_us=start + i * 1000, status=s) for i, s in enumerate(["queued", "completed", "completed"])]
    await store.apply([Event("push", r, None) for r in records])

    assert (await store.list(organisation=org, status="completed"))[0] == 2
    assert (await store.list(organisation=org, scheduler_id="boefje", task_type="boefje"))[0] == 3
    assert (await store.list(organisation=org, scheduler_id="report"))[0] == 0
    bounded = await store.list(
        organisation=org, min_created_at=us_to_datetime(start + 1000), max_created_at=us_to_datetime(start + 2000)
    )
    assert [t.id for t in bounded[1]] == [uuid.UUID(records[2].id), uuid.UUID(records[1].id)]
    assert bounded[0] == 2


async def test_limit_zero_counts_without_rows(pool, org):
    store = TaskStore(pool)
    await store.apply([Event("push", boefje_record(org), None) for _ in range(3)])

    assert await store.list(organisation=org, limit=0) == (3, [])


async def test_plain_counts_come_from_the_counters_not_the_table(pool, org):
    """A count by scheduler/organisation/type/status reads task_counts (a few rows), so it
    costs the same at a million tasks: a counter row alone is enough to answer it."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO task_counts VALUES ('boefje', %s, 'boefje', 'completed', 1000000)", [org]
        )
    store = TaskStore(pool)

    assert await store.list(scheduler_id="boefje", organisation=org, status="completed", limit=0) == (1_000_000, [])
    assert (await store.list(organisation=org, min_created_at=us_to_datetime(0), limit=0))[0] == 0
    async with pool.connection() as conn:
        await conn.execute("DELETE FROM task_counts WHERE organisation = %s", [org])


async def test_counters_follow_inserts_updates_and_deletes(pool, org):
    store = TaskStore(pool)
    records = [boefje_record(org) for _ in range(5)]
    await store.apply([Event("push", r, None) for r in records])
    await store.apply([Event("patch", changed(r, "completed", 5), None) for r in records[:3]])
    await store.patch(records[3].id, {"status": TaskStatus.FAILED})
    async with pool.connection() as conn:
        await conn.execute("DELETE FROM tasks WHERE id = %s", [records[4].id])
        cursor = await conn.execute(
            "SELECT status, n FROM task_counts WHERE organisation = %s AND n <> 0 ORDER BY status", [org]
        )
        counters = await cursor.fetchall()

    assert counters == [("completed", 3), ("failed", 1)]


async def test_stats_groups_the_last_day_by_hour_with_every_status(pool, org):
    store = TaskStore(pool)
    now_us = int(time.time() * 1_000_000)
    hour_us = 3600 * 1_000_000
    records = [
        boefje_record(org, created_us=now_us, status="completed"),
        boefje_record(org, created_us=now_us, status="queued"),
        boefje_record(org, created_us=now_us - 2 * hour_us, status="failed"),
        boefje_record(org, created_us=now_us - 30 * hour_us, status="failed"),
    ]
    await store.apply([Event("push", r, None) for r in records])

    stats = await store.stats(scheduler_id="boefje", organisation_id=org)

    def hour_key(us: int) -> str:
        return us_to_datetime(us - us % hour_us).isoformat()

    assert list(stats) == [hour_key(now_us + 1), hour_key(now_us - 2 * hour_us + 1)]
    assert list(stats[hour_key(now_us + 1)]) == [*STATUSES, "total"]
    assert stats[hour_key(now_us + 1)] == {**dict.fromkeys(STATUSES, 0), "completed": 1, "queued": 1, "total": 2}
    assert stats[hour_key(now_us - 2 * hour_us + 1)]["failed"] == 1
    assert list(stats)[0].endswith("+00:00")
    assert await store.stats(organisation_id=f"{org}-none") == {}


async def test_live_lists_queued_dispatched_and_running_tasks(pool, org):
    store = TaskStore(pool)
    records = [boefje_record(org, status=s) for s in ("queued", "dispatched", "running", "completed")]
    await store.apply([Event("push", r, None) for r in records])

    live = [t for t in await store.live("boefje") if t.task.organisation == org]

    assert sorted(t.task.status.value for t in live) == ["dispatched", "queued", "running"]
    assert {t.rev for t in live} == {"1"}


async def test_patch_sets_fields_and_guards_against_older_events(pool, org):
    store = TaskStore(pool)
    record = boefje_record(org, status="completed", rev=3)
    await store.apply([Event("push", record, None)])

    patched = await store.patch(record.id, {"status": TaskStatus.QUEUED, "priority": 5, "data": {"a": 1}})
    await store.apply([Event("patch", record, None)])  # a replay of the old version

    assert (patched.status, patched.priority, msgspec.json.decode(patched.data)) == (TaskStatus.QUEUED, 5, {"a": 1})
    assert (await store.get(record.id)).status is TaskStatus.QUEUED


async def test_patch_unknown_task_or_nothing_to_patch(pool):
    store = TaskStore(pool)
    with pytest.raises(NotFound, match="task not found, by task_id"):
        await store.patch(uuid.uuid4(), {"status": TaskStatus.FAILED})
    with pytest.raises(BadRequest, match="no data to patch"):
        await store.patch(uuid.uuid4(), {"id": uuid.uuid4()})


def test_us_helpers_match_postgres_precision():
    assert datetime_to_us(us_to_datetime(1_717_000_000_123_457)) == 1_717_000_000_123_457
