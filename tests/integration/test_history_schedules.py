"""ScheduleStore on a real Postgres and Redis: CRUD, the Redis mirror, cron, due schedules
split between workers, and the deadlines pushes set."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from redisched.queue.layout import QueueLayout
from redisched.errors import BadRequest, Conflict, NotFound, ValidationFailed
from redisched.filters import parse_filter_request
from redisched.history.schedules import ScheduleStore
from redisched.history.tasks import Event, TaskStore
from redisched.models import ScheduleCreate, payload_hash, utcnow
from redisched.queue.keys import QueueKeys
from redisched.queue.records import TaskRecord

GRACE = 86400


@pytest.fixture
def store(pool, async_redis, key_prefix) -> ScheduleStore:
    return ScheduleStore(pool, async_redis, QueueLayout(key_prefix), grace_period=GRACE)


def report_data(recipe: str | None = None) -> dict:
    return {"organisation_id": "org1", "report_recipe_id": recipe or uuid.uuid4().hex}


def boefje_data() -> dict:
    return {"boefje": {"id": "dns-records"}, "input_ooi": f"Hostname|internet|{uuid.uuid4().hex}", "organization": "org1"}


def new_report(**fields) -> ScheduleCreate:
    return ScheduleCreate(
        scheduler_id="report",
        organisation=fields.pop("organisation", "org1"),
        data=fields.pop("data", None) or report_data(),
        **fields,
    )


async def mirror(store: ScheduleStore, scheduler_id: str, schedule_hash: str) -> str | None:
    value = await store.redis.hget(QueueKeys(store.layout.prefix, scheduler_id).schedules, schedule_hash)
    return value.decode() if value else None


async def test_create_hashes_data_defaults_the_deadline_to_the_next_cron_run_and_mirrors(store):
    before = utcnow()
    created = await store.create(new_report(schedule="0 3 L * *"))

    assert created.hash == payload_hash("report", created.data)
    assert created.enabled and created.schedule == "0 3 L * *"
    assert created.deadline_at > before and created.deadline_at.hour == 3
    assert (created.deadline_at + timedelta(days=1)).day == 1  # the last day of a month
    assert await store.get(created.id) == created
    assert await mirror(store, "report", created.hash) == f"{created.id}|1"


async def test_create_keeps_a_given_deadline_and_the_data_as_sent(store):
    deadline = datetime(2030, 1, 1, tzinfo=timezone.utc)
    data = {**report_data(), "extra": [1, 2]}

    created = await store.create(new_report(deadline_at=deadline, data=data))

    assert created.deadline_at == deadline and created.schedule is None
    assert created.data == data


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({}, BadRequest, "Either deadline_at or schedule must be provided"),
        ({"schedule": "not a cron"}, ValidationFailed, "validation error"),
        ({"schedule": "61 * * * *"}, ValidationFailed, "validation error"),
        ({"schedule": "* * * * *", "scheduler_id": "nope"}, BadRequest, "Scheduler nope not found"),
        ({"schedule": "* * * * *", "data": {"foo": "bar"}}, BadRequest, "boefje|report_recipe_id|organisation_id"),
    ],
)
async def test_create_refuses_invalid_requests(store, fields, error, message):
    scheduler_id = fields.pop("scheduler_id", "report")
    request = msgspec.structs.replace(new_report(**fields), scheduler_id=scheduler_id)

    with pytest.raises(error, match=message):
        await store.create(request)


async def test_create_conflicts_with_a_schedule_a_push_put_in_the_mirror(store):
    data = report_data()
    schedule_hash = payload_hash("report", data)
    await store.redis.hset(QueueKeys(store.layout.prefix, "report").schedules, schedule_hash, f"{uuid.uuid4()}|1")

    with pytest.raises(Conflict, match=f"schedule with the same hash already exists: {schedule_hash}"):
        await store.create(new_report(schedule="* * * * *", data=data))
    assert (await store.list(schedule_hash=schedule_hash))[0] == 0


async def test_create_conflicts_with_a_stored_schedule_and_repairs_a_lost_mirror_entry(store):
    first = await store.create(new_report(schedule="* * * * *"))
    await store.redis.hdel(QueueKeys(store.layout.prefix, "report").schedules, first.hash)

    with pytest.raises(Conflict):
        await store.create(new_report(schedule="* * * * *", data=first.data))
    assert await mirror(store, "report", first.hash) == f"{first.id}|1"


async def test_concurrent_creates_of_one_hash_store_one(store):
    data = report_data()
    results = await asyncio.gather(
        *(store.create(new_report(schedule="* * * * *", data=data)) for _ in range(5)), return_exceptions=True
    )

    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, Exception))


async def test_list_filters_and_pages_newest_first(store):
    org = f"org-{uuid.uuid4().hex[:8]}"
    created = [await store.create(new_report(organisation=org, schedule="0 0 * * *")) for _ in range(4)]
    await store.patch(created[0].id, {"enabled": False})

    count, page = await store.list(organisation=org, offset=1, limit=2)
    assert count == 4
    assert [s.id for s in page] == [created[2].id, created[1].id]
    assert (await store.list(organisation=org, enabled=False))[0] == 1
    assert (await store.list(organisation=org, schedule_hash=created[3].hash))[1][0].id == created[3].id
    assert (await store.list(organisation=org, scheduler_id="boefje"))[0] == 0
    assert (await store.list(organisation=org, min_created_at=created[2].created_at))[0] == 2
    assert (await store.list(organisation=org, max_deadline_at=utcnow() - timedelta(days=1)))[0] == 0
    assert await store.list(organisation=org, limit=0) == (4, [])


async def test_search_with_a_filter_tree(store):
    org = f"org-{uuid.uuid4().hex[:8]}"
    created = await store.create(new_report(organisation=org, schedule="0 0 * * *"))
    node = parse_filter_request(
        {"filters": [{"column": "data", "field": "report_recipe_id", "operator": "eq", "value": created.data["report_recipe_id"]}]}
    )

    assert await store.search(node, offset=0, limit=10) == (1, [created])


async def test_patch_copies_fields_without_recomputing_and_follows_in_the_mirror(store):
    created = await store.create(new_report(schedule="0 0 * * *"))

    disabled = await store.patch(created.id, {"enabled": False, "schedule": "0 12 * * *", "data": {"x": 1}})
    assert (disabled.enabled, disabled.schedule, disabled.data) == (False, "0 12 * * *", {"x": 1})
    assert (disabled.deadline_at, disabled.hash) == (created.deadline_at, created.hash)
    assert await mirror(store, "report", created.hash) == f"{created.id}|0"

    moved = await store.patch(created.id, {"hash": "f" * 32})
    assert await mirror(store, "report", created.hash) is None
    assert await mirror(store, "report", moved.hash) == f"{created.id}|0"


async def test_patch_refuses_bad_cron_unknown_schedule_and_a_taken_hash(store):
    first = await store.create(new_report(schedule="0 0 * * *"))
    second = await store.create(new_report(schedule="0 0 * * *"))

    with pytest.raises(ValidationFailed, match="^1 validation error for Schedule\nschedule\n  Value error, Invalid cron expression: bad "):
        await store.patch(first.id, {"schedule": "bad"})
    with pytest.raises(NotFound, match="schedule not found"):
        await store.patch(uuid.uuid4(), {"enabled": False})
    with pytest.raises(Conflict):
        await store.patch(second.id, {"hash": first.hash})
    assert (await store.get(second.id)).hash == second.hash
    assert await mirror(store, "report", first.hash) == f"{first.id}|1"


async def test_delete_is_idempotent_detaches_tasks_and_clears_the_mirror(store, pool):
    created = await store.create(new_report(schedule="0 0 * * *"))
    tasks = TaskStore(pool)
    record = TaskRecord(
        id=str(uuid.uuid4()), scheduler_id="report", schedule_id=str(created.id), organisation="org1",
        priority="1", status="completed", type="report", hash=created.hash,
        data=msgspec.json.encode(created.data).decode(), created_at="1", modified_at="1", pk="", rev="1",
    )
    await tasks.apply([Event("push", record, None)])
    assert (await tasks.get(record.id)).schedule_id == created.id

    await store.delete(created.id)
    await store.delete(created.id)

    assert await store.get(created.id) is None
    assert (await tasks.get(record.id)).schedule_id is None
    assert await mirror(store, "report", created.hash) is None


async def test_due_schedules_are_split_between_concurrent_workers(store):
    past = datetime(1990, 1, 1, tzinfo=timezone.utc)
    org = f"org-{uuid.uuid4().hex[:8]}"
    for minute in range(10):
        await store.create(new_report(organisation=org, schedule="0 0 * * *" if minute % 2 else None,
                                      deadline_at=past + timedelta(minutes=minute)))
    now = past + timedelta(hours=1)

    async with store.transaction() as first, store.transaction() as second:
        mine = await store.due(first, "report", now, limit=6)
        theirs = await store.due(second, "report", now, limit=10)
        assert len(mine) == 6 and len(theirs) == 4
        assert not {s.id for s in mine} & {s.id for s in theirs}
        assert [s.deadline_at for s in mine] == sorted(s.deadline_at for s in mine)
        for schedule in [*mine, *theirs]:
            deadline = await store.advance(first if schedule in mine else second, schedule, now)
            assert deadline == (datetime(1990, 1, 2, tzinfo=timezone.utc) if schedule.schedule else None)

    async with store.transaction() as conn:
        assert await store.due(conn, "report", now, limit=10) == []


def push_event(schedule_id: uuid.UUID | str, scheduler_id: str, data: dict, sched: str) -> Event:
    record = TaskRecord(
        id=str(uuid.uuid4()), scheduler_id=scheduler_id, schedule_id=str(schedule_id), organisation="org1",
        priority="1", status="queued", type=scheduler_id, hash=payload_hash(scheduler_id, data),
        data=msgspec.json.encode(data).decode(), created_at="1700000000000000", modified_at="1700000000000000",
        pk="", rev="1",
    )
    return Event("push", record, sched)


async def test_a_new_push_schedule_is_stored_and_due_after_the_grace_period_plus_jitter(store, pool):
    data, schedule_id, now = boefje_data(), uuid.uuid4(), utcnow()
    async with store.transaction() as conn:
        await store.apply_pushes(conn, [push_event(schedule_id, "boefje", data, "new")], now)

    stored = await store.get(schedule_id)
    assert (stored.hash, stored.enabled, stored.schedule, stored.data) == (payload_hash("boefje", data), True, None, data)
    assert now + timedelta(seconds=GRACE) <= stored.deadline_at <= now + timedelta(seconds=GRACE, hours=5)
    assert stored.created_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)


async def test_a_linked_push_moves_cron_and_report_deadlines_and_leaves_disabled_ones(store):
    with_cron = await store.create(new_report(schedule="30 6 * * *"))
    one_off = await store.create(new_report(deadline_at=datetime(2030, 1, 1, tzinfo=timezone.utc)))
    disabled = await store.create(new_report(deadline_at=datetime(2030, 1, 1, tzinfo=timezone.utc)))
    await store.patch(disabled.id, {"enabled": False})
    now = datetime(2031, 5, 5, 12, tzinfo=timezone.utc)

    async with store.transaction() as conn:
        events = [push_event(s.id, "report", s.data, "linked") for s in (with_cron, one_off, disabled)]
        await store.apply_pushes(conn, events * 2, now)

    assert (await store.get(with_cron.id)).deadline_at == datetime(2031, 5, 6, 6, 30, tzinfo=timezone.utc)
    assert (await store.get(one_off.id)).deadline_at is None
    assert (await store.get(disabled.id)).deadline_at == disabled.deadline_at


async def test_rebuild_mirror_restores_every_entry(store):
    created = await store.create(new_report(schedule="0 0 * * *"))
    await store.patch(created.id, {"enabled": False})
    await store.redis.delete(QueueKeys(store.layout.prefix, "report").schedules)

    assert await store.rebuild_mirror("report") >= 1
    assert await mirror(store, "report", created.hash) == f"{created.id}|0"
