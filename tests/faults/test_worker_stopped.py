"""Scenario: ``redisched worker`` (snapshotter, reaper, schedulers on one event loop) is
stopped by SIGTERM, then by SIGINT, each time in the middle of a history backlog. It leaves
within seconds (its loops stop when cancelled, none is left for the 5 s grace), and once a
worker is back every event the queue took reaches Postgres: no task missing, no status
change lost or stored twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid

import psycopg
import pytest
import redis.asyncio as aredis

from redisched.history.snapshotter import stream_id, wait_caught_up
from redisched.queue.keys import QueueKeys
from redisched.queue.layout import QueueLayout
from redisched.queue.queue import TaskQueues
from tests.faults.common import log, task_data
from tests.support.api import WorkerProcess, backend_env

pytestmark = pytest.mark.timeout(180, method="thread")

TASKS = 6000
POPPED = 1500
COMPLETED = 750
EXIT_SECONDS = 15.0  # what a hang would pass; a stop takes well under a second unloaded


async def fill(redis_url: str, prefix: str) -> dict[str, int]:
    """Push, pop and complete through the queue scripts; per task id, the events written."""
    redis = aredis.Redis.from_url(redis_url)
    queues = TaskQueues(redis, QueueLayout(prefix))
    await queues.load_functions()
    events: dict[str, int] = {}
    for _ in range(TASKS // 200):
        ids = [str(uuid.uuid4()) for _ in range(200)]
        pushed = await asyncio.gather(
            *(queues.push("boefje", task_id=task_id, organisation="org1", data=task_data(task_id), priority=5) for task_id in ids)
        )
        events.update((record.id, 1) for record in pushed)
    popped = []
    while len(popped) < POPPED:
        popped += await queues.pop("boefje", limit=100)
    for record in popped:
        events[record.id] += 1
    for record in popped[:COMPLETED]:
        await queues.patch(record.id, {"status": "completed"})
        events[record.id] += 1
    await redis.aclose()
    return events


def behind(redis_url: str, prefix: str) -> bool:
    """Whether the boefje stream holds events Postgres does not have yet."""

    async def look() -> bool:
        redis = aredis.Redis.from_url(redis_url)
        keys = QueueKeys(prefix, "boefje")
        try:
            applied = await redis.hget(keys.meta, "applied")
            [(newest, _)] = await redis.xrevrange(keys.events, count=1)
            return applied is None or stream_id(applied) < stream_id(newest)
        finally:
            await redis.aclose()

    return asyncio.run(look())


def applied_some(redis_url: str, prefix: str, timeout: float = 60) -> None:
    """Until the worker committed its first batch."""
    import redis

    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while client.hget(QueueKeys(prefix, "boefje").meta, "applied") is None:
        assert time.monotonic() < deadline, "the worker applied nothing"
        time.sleep(0.01)
    client.close()


def stopped_within(worker: WorkerProcess, signum: int) -> float:
    started = time.monotonic()
    worker.signal(signum)
    try:
        code = worker.process.wait(EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        pytest.fail(f"redisched worker still running {EXIT_SECONDS} s after {signal.Signals(signum).name}:\n{worker.output()}")
    took = time.monotonic() - started
    assert code == 0, worker.output()
    return took


def test_worker_stopped_mid_backlog_leaves_promptly_and_loses_no_event(private_redis_server, dsn, prefix):
    redis_url = private_redis_server.url
    events = asyncio.run(fill(redis_url, prefix))
    worker = WorkerProcess({**backend_env(redis_url, dsn, prefix), "DATABASE_MIGRATION": "false"})
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            worker.start()
            applied_some(redis_url, prefix)
            took = stopped_within(worker, signum)
            assert behind(redis_url, prefix), "the backlog was drained before the signal: nothing was tested"
            log(f"{signal.Signals(signum).name} mid-backlog: exited in {took:.2f} s")
        assert "did not stop within" not in worker.log(), worker.output()

        worker.start()
        probe = aredis.Redis.from_url(redis_url, socket_timeout=5)

        async def drained() -> bool:
            try:
                return await wait_caught_up(probe, QueueLayout(prefix), timeout=90)
            finally:
                await probe.aclose()

        assert asyncio.run(drained()), worker.output()
        stopped_within(worker, signal.SIGTERM)
    finally:
        worker.close()

    with psycopg.connect(dsn) as conn:
        statuses = dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())
        history = dict(conn.execute("SELECT task_id::text, count(*) FROM task_history GROUP BY task_id").fetchall())
    assert statuses == {"queued": TASKS - POPPED, "dispatched": POPPED - COMPLETED, "completed": COMPLETED}
    assert history == events  # every push, pop and completion once, none lost, none twice
