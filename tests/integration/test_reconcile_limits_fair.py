"""Reconciliation after Redis lost everything, with fairness on and limit rules in force: the
restored tasks are back in their groups (a concurrency group counts its restored leased
tasks, so it neither goes over its cap nor sticks at it) and in the fair structures (the
organisations take turns again)."""

from __future__ import annotations

import asyncio
import collections
import json

import pytest

from redisched.history.db import open_pool
from redisched.history.migrate import migrate
from redisched.history.reconcile import reconcile
from redisched.history.schedules import ScheduleStore
from redisched.history.snapshotter import Snapshotter, wait_caught_up
from redisched.history.tasks import TaskStore
from redisched.limit_rules import parse_rules
from redisched.queue.layout import QueueLayout
from redisched.queue.queue import TaskQueues
from tests.factories import boefje_data

RULES = parse_rules([{"boefje": "nmap", "group": "nmap", "concurrency": 2}])


@pytest.fixture(scope="module")
async def dsn(pg_dsn):
    await migrate(pg_dsn)
    return pg_dsn


@pytest.fixture(params=[1, 3], ids=["1-partition", "3-partitions"])
def queues(request, async_redis, key_prefix) -> TaskQueues:
    layout = QueueLayout(prefix=key_prefix, partitions=request.param, fairness="organisation", limits=RULES)
    return TaskQueues(async_redis, layout)


@pytest.fixture
async def tasks(dsn, async_redis, stream_redis, queues):
    pool = await open_pool(dsn, max_size=4)
    async with pool.connection() as conn:  # reconciliation reads all of Postgres: start empty
        await conn.execute("TRUNCATE tasks, schedules, task_counts")
    store = TaskStore(pool)
    schedules = ScheduleStore(pool, async_redis, queues.layout)
    snapshotter = Snapshotter(stream_redis, store, schedules, layout=queues.layout, forget=queues.forget_finished, block_ms=20)
    runner = asyncio.create_task(snapshotter.run())
    yield store, schedules
    runner.cancel()
    await asyncio.wait_for(asyncio.gather(runner, return_exceptions=True), 10)
    await pool.close()


def boefje_of(record) -> str:
    return json.loads(record.data)["boefje"]["id"]


async def test_restored_tasks_are_limited_again_and_served_fairly(queues, tasks, async_redis, key_prefix):
    store, schedules = tasks
    for org in ("a", "b"):
        for _ in range(4):
            await queues.push("boefje", organisation=org, data=boefje_data("nmap", organization=org), priority=5)
        for _ in range(6):
            await queues.push("boefje", organisation=org, data=boefje_data("dns-records", organization=org), priority=50)
    held, dns_done = [], 0
    while len(held) < 2:  # the group's two slots, taken; the dns-records tasks met meanwhile done
        [task] = await queues.pop("boefje", limit=1)
        if boefje_of(task) == "nmap":
            held.append(task)
        else:
            await queues.patch(task.id, {"status": "completed"})
            dns_done += 1
    assert dns_done < 6
    assert await wait_caught_up(queues.redis, queues.layout, timeout=20)
    for key in await async_redis.keys(f"{key_prefix}:*"):
        await async_redis.delete(key)

    result = await reconcile(queues, store, schedules)
    assert result.restored == 20 - dns_done

    # The two held nmap tasks still count against the group: the next pops hand out the
    # dns-records tasks only (before: all 6 queued nmap tasks came back unlimited, 8 held).
    popped = [t for _ in range(14) for t in await queues.pop("boefje", limit=1)]
    assert collections.Counter(boefje_of(t) for t in popped) == {"dns-records": 12 - dns_done}
    if queues.layout.partitions == 1:  # fairness holds per partition (README)
        assert collections.Counter(t.organisation for t in popped[:6]) == {"a": 3, "b": 3}  # fair turns
    # A restored lease that ends frees its slot (and only one): the group never sticks at its cap.
    await queues.patch(held[0].id, {"status": "completed"})
    [next_nmap] = await queues.pop("boefje", limit=1)
    assert boefje_of(next_nmap) == "nmap"
    assert await queues.pop("boefje", limit=1) == []  # two held again: the group is full
    for task in (held[1], next_nmap):
        await queues.patch(task.id, {"status": "completed"})
    rest = [t for _ in range(8) for t in await queues.pop("boefje", limit=1)]
    assert [boefje_of(t) for t in rest] == ["nmap", "nmap"]  # each of the 5 left, two at a time
