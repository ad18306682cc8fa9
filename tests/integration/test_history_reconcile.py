"""Redis and Postgres together: after pushes, pops and patches Postgres matches Redis task for
task, and when Redis loses everything, reconciliation restores every live task (and no
finished one) with its status. Each test runs with one partition per queue and with three."""

from __future__ import annotations

import asyncio
import random

import pytest

from redisched.history.db import open_pool
from redisched.history.migrate import migrate
from redisched.history.reconcile import reconcile
from redisched.history.schedules import ScheduleStore
from redisched.history.snapshotter import Snapshotter, wait_caught_up
from redisched.history.tasks import TaskStore
from redisched.models import LEASED
from redisched.queue.layout import QueueLayout
from redisched.queue.queue import TaskQueues
from redisched.queue.records import decode_record
from tests.factories import boefje_data, normalizer_data


@pytest.fixture(scope="module")
async def dsn(pg_dsn):
    await migrate(pg_dsn)
    return pg_dsn


@pytest.fixture(params=[1, 3], ids=["1-partition", "3-partitions"])
def queues(request, async_redis, key_prefix) -> TaskQueues:  # the snapshotter's Redis: the single one
    return TaskQueues(async_redis, QueueLayout(prefix=key_prefix, partitions=request.param))


@pytest.fixture
async def history(dsn, async_redis, stream_redis, key_prefix, queues):
    pool = await open_pool(dsn, max_size=4)
    async with pool.connection() as conn:  # reconciliation reads all of Postgres: start empty
        await conn.execute("TRUNCATE tasks, schedules, task_counts")
    partitions = queues.layout.partitions
    tasks, schedules = TaskStore(pool), ScheduleStore(pool, async_redis, queues.layout)
    snapshotter = Snapshotter(
        stream_redis, tasks, schedules, layout=queues.layout, forget=queues.forget_finished, block_ms=20
    )
    runner = asyncio.create_task(snapshotter.run())
    yield tasks, schedules
    runner.cancel()
    await asyncio.wait_for(asyncio.gather(runner, return_exceptions=True), 10)  # stops when asked
    await pool.close()


async def _drain(queues) -> None:
    caught_up = await wait_caught_up(queues.redis, queues.layout, timeout=20)
    assert caught_up, "snapshotter did not catch up"


async def _work(queues, count: int, seed: int) -> None:
    """Pushes, pops and patches in a mix a real install sees."""
    rng = random.Random(seed)
    for i in range(count):
        if i % 2:
            await queues.push("boefje", organisation=f"org{i % 5}", data=boefje_data(), priority=rng.randint(1, 100))
        else:
            await queues.push("normalizer", organisation=f"org{i % 5}", data=normalizer_data(), priority=rng.randint(1, 100))
    for scheduler_id in ("boefje", "normalizer"):
        for _ in range(count // 4):
            for task in await queues.pop(scheduler_id, limit=1):
                roll = rng.random()
                if roll < 0.4:
                    await queues.patch(task.id, {"status": "running"})
                elif roll < 0.8:
                    await queues.patch(task.id, {"status": rng.choice(["completed", "failed"])})
                elif roll < 0.9:
                    await queues.patch(task.id, {"status": "queued"})


async def test_postgres_matches_redis_after_ten_thousand_operations(queues, history, async_redis, key_prefix):
    tasks, _ = history
    # 5,400 pushes, 2,700 pops, ~2,400 patches (a third of that over three partitions)
    await _work(queues, 5400 // queues.layout.partitions, seed=1)
    await _drain(queues)
    for scheduler_id in ("boefje", "normalizer"):
        live = {t.task.id.hex: t.task for t in await tasks.live(scheduler_id)}
        in_redis = [
            (task_id, raw)
            for keys in queues.layout.of(scheduler_id)
            for task_id, raw in (await async_redis.hgetall(keys.tasks)).items()
        ]
        sizes = [await async_redis.hlen(keys.tasks) for keys in queues.layout.of(scheduler_id)]
        assert all(sizes), "every partition has tasks"
        redis_live = {}
        for task_id, raw in in_redis:
            record = decode_record(raw, task_id=task_id.decode(), queue_id=scheduler_id)
            if record.status == "queued" or record.status in LEASED:
                redis_live[record.id.replace("-", "")] = record
        assert set(live) == set(redis_live)
        for key, task in live.items():
            record = redis_live[key]
            assert task.status.value == record.status and task.priority == int(record.priority)
        finished_left = [r for r in in_redis if b'"status":"completed"' in r or b'"status":"failed"' in r]
        assert finished_left == [], "finished tasks must leave Redis once Postgres has them"


async def test_reconcile_restores_every_live_task_after_redis_lost_everything(queues, history, async_redis, key_prefix):
    tasks, _ = history
    await _work(queues, 1000, seed=2)
    await _drain(queues)
    before = {sid: {t.task.id: t.task.status for t in await tasks.live(sid)} for sid in ("boefje", "normalizer")}
    queued_before = {sid: await queues.qsize(sid) for sid in ("boefje", "normalizer")}
    assert sum(len(v) for v in before.values()) > 500
    for key in await async_redis.keys(f"{key_prefix}:*"):
        await async_redis.delete(key)

    result = await reconcile(queues, tasks, history[1])

    assert result.restored == sum(len(v) for v in before.values())
    for scheduler_id, statuses in before.items():
        for task_id, status in statuses.items():
            record = await queues.get(task_id)
            assert record is not None and record.status == status.value
        assert await queues.qsize(scheduler_id) == queued_before[scheduler_id]
    again = await reconcile(queues, tasks, history[1])
    assert again.restored == 0
