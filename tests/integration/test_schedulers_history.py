"""What the schedulers do on the real Postgres and Redis: newest task per hash, due schedules
split between workers, report schedules fired in their transaction, and the task outlet."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import msgspec
import pytest

from redisched.clients.amqp import Retryable
from redisched.models import Boefje, BoefjeTask, ReportTask, ScheduleCreate, TaskStatus, utcnow
from redisched.queue.keys import QueueKeys
from redisched.queue.queue import TaskQueues
from redisched.schedulers.outlet import TaskOutlet
from tests.integration.conftest import QueueOptions, make_layout
from tests.simulation.harness import fresh_database, history_on

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def dsn():
    with fresh_database() as dsn:
        yield dsn


@pytest.fixture
async def history(dsn, async_redis, key_prefix):
    async with history_on(dsn, async_redis, key_prefix) as history:
        yield history


def boefje_task(ooi: str, org: str = "org1", boefje_id: str = "dns-records") -> BoefjeTask:
    return BoefjeTask(boefje=Boefje(id=boefje_id), input_ooi=ooi, organization=org)


async def insert_task(history, task_hash: str, status: str, created_ago: timedelta) -> uuid.UUID:
    task_id = uuid.uuid4()
    moment = utcnow() - created_ago
    async with history.tasks.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tasks (id, scheduler_id, organisation, priority, status, type, hash, data, created_at,"
            " modified_at) VALUES (%s, 'boefje', 'org1', 1, %s, 'boefje', %s, '{}', %s, %s)",
            [task_id, status, task_hash, moment, moment],
        )
    return task_id


async def test_latest_tasks_gives_the_newest_task_of_each_hash(history):
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    await insert_task(history, first, "completed", timedelta(days=2))
    newest = await insert_task(history, first, "running", timedelta(hours=1))
    await insert_task(history, second, "failed", timedelta(hours=3))
    latest = await history.latest_tasks([first, second, uuid.uuid4().hex])
    assert set(latest) == {first, second}
    assert latest[first].id == newest and latest[first].status is TaskStatus.RUNNING
    assert latest[second].status is TaskStatus.FAILED


async def boefje_schedules(history, n: int, deadline) -> set[uuid.UUID]:
    ids = set()
    for _ in range(n):
        task = boefje_task(f"Hostname|internet|{uuid.uuid4().hex}")
        data = msgspec.to_builtins(task)
        new = ScheduleCreate(scheduler_id="boefje", organisation="org1", data=data, deadline_at=deadline)
        ids.add((await history.schedules.create(new)).id)
    return ids


async def test_two_workers_claim_due_schedules_without_overlap_and_hold_them(history):
    now = utcnow()
    mine = await boefje_schedules(history, 30, now - timedelta(minutes=1))
    later = await boefje_schedules(history, 2, now + timedelta(hours=1))
    hold = now + timedelta(minutes=10)
    claims = await asyncio.gather(*(history.claim_due("boefje", now, 10, hold) for _ in range(4)))
    claimed = [s.id for claim in claims for s in claim]
    assert len(claimed) == len(set(claimed)) and not set(claimed) & later
    while batch := await history.claim_due("boefje", now, 10, hold):
        claimed += [s.id for s in batch]
    assert mine <= set(claimed)
    assert {(await history.schedules.get(i)).deadline_at for i in mine} == {hold}


async def test_postpone_and_disable_move_a_schedule_out_of_the_due_ones(history, async_redis, key_prefix):
    now = utcnow()
    postponed, disabled = await boefje_schedules(history, 2, now - timedelta(minutes=1))
    await history.postpone(postponed, now + timedelta(hours=3))
    await history.disable(disabled)
    assert (await history.schedules.get(postponed)).deadline_at == now + timedelta(hours=3)
    schedule = await history.schedules.get(disabled)
    assert schedule.enabled is False
    mirror = await async_redis.hget(QueueKeys(key_prefix, "boefje").schedules, schedule.hash)
    assert mirror.decode().endswith("|0")


def report_schedule(data: dict, **timing) -> ScheduleCreate:
    return ScheduleCreate(scheduler_id="report", organisation="org1", data=data, **timing)


async def test_fire_due_fires_in_the_transaction_and_advances_cron_or_clears_one_offs(history):
    now = utcnow()
    recipe = {"organisation_id": "org1", "report_recipe_id": uuid.uuid4().hex}
    one_off = {"organisation_id": "org1", "report_recipe_id": uuid.uuid4().hex}
    cron = await history.schedules.create(report_schedule(recipe, schedule="0 6 * * *"))
    once = await history.schedules.create(report_schedule(one_off, deadline_at=now))
    await history.postpone(cron.id, now - timedelta(minutes=1))
    fired = []

    async def fire(schedule) -> None:
        fired.append(schedule.id)

    await history.fire_due("report", now, 100, fire)
    assert {cron.id, once.id} <= set(fired)
    assert (await history.schedules.get(once.id)).deadline_at is None
    assert (await history.schedules.get(cron.id)).deadline_at > now


# --- the outlet on Redis ---------------------------------------------------------------------


@pytest.fixture
def outlet(async_redis, key_prefix) -> TaskOutlet:
    return TaskOutlet(TaskQueues(async_redis, make_layout(key_prefix)))


async def mirror_entry(outlet: TaskOutlet, task_hash: str):
    return await outlet.queues.redis.hget(outlet.queues.commands.keys("boefje").schedules, task_hash)


async def test_a_push_links_a_schedule_unless_told_not_to(outlet):
    scheduled, unscheduled = boefje_task("Hostname|internet|a"), boefje_task("Hostname|internet|b")
    assert await outlet.push("boefje", "org1", scheduled, 10)
    assert await outlet.push("boefje", "org1", unscheduled, 10, schedule=False)
    assert await mirror_entry(outlet, scheduled.hash()) is not None
    assert await mirror_entry(outlet, unscheduled.hash()) is None
    assert (await outlet.queues.get(unscheduled.id)).schedule_id is None
    assert (await outlet.queues.get(scheduled.id)).schedule_id is not None


async def test_a_queued_twin_is_refused_and_a_full_queue_is_retryable(async_redis, key_prefix):
    outlet = TaskOutlet(TaskQueues(async_redis, make_layout(key_prefix, options={"report": QueueOptions(maxsize=1)})))
    task = ReportTask(organisation_id="org1", report_recipe_id="r1")
    assert await outlet.push("report", "org1", task, 10)
    assert not await outlet.push("report", "org1", task, 10)
    with pytest.raises(Retryable):
        await outlet.push("report", "org1", ReportTask(organisation_id="org1", report_recipe_id="r2"), 10)


async def test_cancel_queued_cancels_only_that_organisations_tasks_on_that_object(outlet):
    ooi = "Hostname|internet|gone.example"
    doomed = [boefje_task(ooi), boefje_task(ooi, boefje_id="nmap")]
    kept = [boefje_task(ooi, org="org2"), boefje_task("Hostname|internet|other")]
    for task in doomed + kept:
        await outlet.push("boefje", task.organization, task, 10)
    assert await outlet.cancel_queued("boefje", "org1", ooi) == 2
    assert [await outlet.live_status(t.id) for t in doomed] == ["cancelled", "cancelled"]
    assert [await outlet.live_status(t.id) for t in kept] == ["queued", "queued"]


async def test_deschedule_deletes_the_schedule_and_unlinks_its_live_task(history, outlet):
    task = boefje_task("Hostname|internet|deschedule.example")
    data = msgspec.to_builtins(task)
    new = ScheduleCreate(scheduler_id="boefje", organisation="org1", data=data, deadline_at=utcnow())
    schedule = await history.schedules.create(new)
    assert await outlet.push("boefje", "org1", task, 10)
    assert (await outlet.queues.get(task.id)).schedule_id == str(schedule.id)
    async with history.tasks.pool.connection() as conn:  # the snapshotter's row of the push
        await conn.execute(
            "INSERT INTO tasks (id, scheduler_id, schedule_id, organisation, priority, status, type, hash, data,"
            " created_at, modified_at) VALUES (%s, 'boefje', %s, 'org1', 10, 'queued', 'boefje', %s, '{}', now(), now())",
            [task.id, schedule.id, task.hash()],
        )
    schedule_id, live = await history.delete_schedule("boefje", task.hash())
    await outlet.unlink_schedule(schedule_id, live)
    assert schedule_id == schedule.id and await history.schedules.get(schedule.id) is None
    assert await mirror_entry(outlet, task.hash()) is None
    assert (await outlet.queues.get(task.id)).schedule_id is None
    assert await history.delete_schedule("boefje", task.hash()) is None
