"""How ``redisched.app.running`` stops a process's background loops (SIGTERM in ``redisched
worker`` and ``serve``)."""

from __future__ import annotations

import asyncio

from redisched import app
from redisched.config import Settings


async def test_the_loops_stop_last_started_first_so_the_schedulers_drain_while_the_history_still_moves(
    redis_url, pg_dsn, key_prefix
):
    history_task: asyncio.Task | None = None
    seen_while_draining = []

    async def snapshot(_services) -> None:
        nonlocal history_task
        history_task = asyncio.current_task()
        await asyncio.Event().wait()

    async def schedule(_services) -> None:
        try:
            await asyncio.Event().wait()
        finally:  # a listener drains its messages in flight: their handlers wait on the history
            await asyncio.sleep(0.1)
            seen_while_draining.append(history_task.cancelling() == 0 and not history_task.done())

    settings = Settings(redis_url=redis_url, db_uri=pg_dsn, key_prefix=key_prefix)
    async with app.running(settings, snapshot, schedule):
        await asyncio.sleep(0.05)
    assert seen_while_draining == [True]
    assert history_task.cancelled()


async def test_a_loop_after_one_that_took_the_whole_grace_still_gets_its_stop(redis_url, pg_dsn, key_prefix, monkeypatch, caplog):
    monkeypatch.setattr(app, "SHUTDOWN_GRACE_SECONDS", 0.2)
    stopped = []

    async def snapshot(_services) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.05)  # a batch's cleanup
            stopped.append("snapshot")

    async def schedule(_services) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.8)  # past the grace, and past the least a loop gets
            stopped.append("schedule")

    settings = Settings(redis_url=redis_url, db_uri=pg_dsn, key_prefix=key_prefix)
    async with app.running(settings, snapshot, schedule):
        await asyncio.sleep(0.05)
    assert stopped == ["snapshot"]  # it got its stop, though the schedulers took the grace
    assert [r.getMessage() for r in caplog.records if "did not stop" in r.getMessage()] == ["schedule did not stop within 0 s"]
