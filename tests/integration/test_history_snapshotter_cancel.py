"""Cancelling the snapshotter (SIGTERM in ``redisched worker``) on a real Redis and Postgres,
with other coroutines keeping the event loop busy, as the worker's reaper and listeners do:
it stops wherever the cancel lands, also when the cancel is lost on its way (Python 3.11's
asyncio.wait_for), and the next run applies what it left, once."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import psycopg
import pytest

from redisched.history.snapshotter import GROUP, catch_up_watch, wait_caught_up
from redisched.history.tasks import TaskStore
from redisched.models import TaskStatus
from redisched.queue.keys import QueueKeys
from redisched.queue.layout import QueueLayout
from tests.integration.test_history_snapshotter import Pusher, make_snapshotter
from tests.support.cancellation import lose_cancellation

STOP_SECONDS = 5.0  # a stop that takes longer is a hang here: the worker's grace is 5 s


@pytest.fixture
def dsn(pg_dsn, pool) -> str:
    """The session's database, migrated (by the ``pool`` fixture)."""
    return pg_dsn


@contextlib.asynccontextmanager
async def busy_loop(spinners: int = 20):
    """Coroutines that keep the event loop busy (each yields at every turn) meanwhile."""
    stopping = False

    async def spin() -> None:
        while not stopping:
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(spin()) for _ in range(spinners)]
    try:
        yield
    finally:
        stopping = True
        await asyncio.gather(*tasks)


async def stops(task: asyncio.Task) -> bool:
    """Cancel ``task``; whether it ended within STOP_SECONDS (it is cancelled again if not)."""
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=STOP_SECONDS)
    if not done:
        task.cancel()
        await asyncio.wait([task], timeout=STOP_SECONDS)
    return bool(done)


class LosesCancellation:
    """A pool whose first hand-out of a connection cancels the task it goes to in that very
    turn, through wait_for: what the snapshotter's partition task meets when it is cancelled
    (its TaskGroup cancelled) while it waits for a connection of a busy pool."""

    def __init__(self, pool) -> None:
        self.pool = pool
        self.cancelled: asyncio.Task | None = None
        self.went_on = asyncio.Event()  # the cancelled task went on past the hand-out

    @contextlib.asynccontextmanager
    async def connection(self, timeout=None):
        if self.cancelled is None:
            self.cancelled = asyncio.current_task()
            await lose_cancellation()
            self.went_on.set()
        async with self.pool.connection(timeout=timeout) as conn:
            yield conn


async def emit_backlog(pusher: Pusher, tasks: int) -> list:
    """A push and a completion per task, written straight to the stream."""
    records = [pusher.new() for _ in range(tasks)]
    for record in records:
        await pusher.emit("push", record)
        await pusher.emit("patch", record, "completed")
    return records


async def drain(pool, redis, prefix, *, consumer: str = "c1") -> None:
    runner = asyncio.create_task(make_snapshotter(pool, redis, prefix, consumer=consumer).run())
    try:
        assert await wait_caught_up(redis, QueueLayout(prefix), timeout=15)
    finally:
        assert await stops(runner)


async def history_rows(pool, ids) -> list[tuple]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT task_id::text, count(*) FROM task_history WHERE task_id = ANY(%s) GROUP BY task_id", [list(ids)]
        )
        return await cursor.fetchall()


async def statuses(pool, ids) -> list[tuple]:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT status, count(*) FROM tasks WHERE id = ANY(%s) GROUP BY status", [list(ids)])
        return await cursor.fetchall()


async def test_a_cancellation_lost_while_waiting_for_a_connection_still_stops_the_snapshotter(
    pool, stream_redis, key_prefix
):
    pusher = Pusher(stream_redis, key_prefix)
    records = await emit_backlog(pusher, 30)
    losing = LosesCancellation(pool)
    snapshotter = make_snapshotter(pool, stream_redis, key_prefix, consumer="c1", batch_size=10)
    snapshotter.tasks = TaskStore(losing)
    async with busy_loop():
        runner = asyncio.create_task(snapshotter.run())
        while losing.cancelled is None:
            await asyncio.sleep(0.01)
        done, _ = await asyncio.wait([losing.cancelled], timeout=STOP_SECONDS)
        assert done, "the snapshotter went on after its cancellation was lost"
        assert await stops(runner)
    if sys.version_info < (3, 12):  # where wait_for loses it: the case really happened
        assert losing.went_on.is_set()

    await drain(pool, stream_redis, key_prefix)
    assert await statuses(pool, [r.id for r in records]) == [("completed", 30)]
    assert sorted(await history_rows(pool, [r.id for r in records])) == sorted((r.id, 2) for r in records)


async def test_cancelled_while_its_commit_waits_on_a_lock_it_stops_and_the_next_run_applies_the_batch(
    pool, dsn, stream_redis, key_prefix
):
    pusher = Pusher(stream_redis, key_prefix)
    first = await pusher.emit("push", pusher.new())
    await drain(pool, stream_redis, key_prefix)
    await pusher.emit("patch", first, "completed")
    keys = QueueKeys(key_prefix, "boefje")
    async with await psycopg.AsyncConnection.connect(dsn) as locker:
        async with locker.transaction():
            await locker.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", [first.id])
            async with busy_loop():
                runner = asyncio.create_task(make_snapshotter(pool, stream_redis, key_prefix, consumer="c1").run())
                while not (await stream_redis.xpending(keys.events, GROUP))["pending"]:
                    await asyncio.sleep(0.01)  # read: now committing, behind the lock
                await asyncio.sleep(0.2)
                assert await stops(runner), "the snapshotter did not stop while its commit waited on a lock"
            assert (await stream_redis.xpending(keys.events, GROUP))["pending"] == 1  # not acked: replayed
    assert (await TaskStore(pool).get(first.id)).status is TaskStatus.QUEUED

    await drain(pool, stream_redis, key_prefix)
    assert (await TaskStore(pool).get(first.id)).status is TaskStatus.COMPLETED
    assert await history_rows(pool, [first.id]) == [(first.id, 2)]


async def test_cancelled_at_any_point_of_a_backlog_beside_a_busy_loop_nothing_is_lost_or_doubled(
    pool, stream_redis, key_prefix
):
    pusher = Pusher(stream_redis, key_prefix)
    records = await emit_backlog(pusher, 300)
    keys = QueueKeys(key_prefix, "boefje")
    waits = []
    async with busy_loop():
        for delay in (0.0, 0.01, 0.03, 0.06, 0.1, 0.15):
            runner = asyncio.create_task(make_snapshotter(pool, stream_redis, key_prefix, consumer="c1", batch_size=40).run())
            waits += [asyncio.create_task(wait_caught_up(stream_redis, QueueLayout(key_prefix), timeout=0.3)) for _ in range(20)]
            await asyncio.sleep(delay)
            assert await stops(runner), f"the snapshotter did not stop, cancelled after {delay} s"
        done, _ = await asyncio.wait(waits, timeout=STOP_SECONDS)
        assert len(done) == len(waits), "a wait for the history outlived its timeout"
    assert await stream_redis.hget(keys.meta, "applied") is not None  # some runs got batches through

    await drain(pool, stream_redis, key_prefix)
    assert sorted(await history_rows(pool, [r.id for r in records])) == sorted((r.id, 2) for r in records)
    assert await statuses(pool, [r.id for r in records]) == [("completed", 300)]


async def test_the_shared_poll_ends_when_its_last_waiter_is_cancelled(stream_redis, key_prefix):
    pusher = Pusher(stream_redis, key_prefix, "report")
    await pusher.emit("push", pusher.new())  # nothing applies it: they would wait 60 s
    layout = QueueLayout(key_prefix)
    async with busy_loop():
        waits = [asyncio.create_task(wait_caught_up(stream_redis, layout, timeout=60)) for _ in range(50)]
        watch = catch_up_watch(stream_redis)
        while watch.rounds < 2:
            await asyncio.sleep(0.01)
        poller = watch._poller
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        done, _ = await asyncio.wait([poller], timeout=STOP_SECONDS)
    assert done and not watch.waiters
