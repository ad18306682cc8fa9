"""The snapshotter and the lease reaper on an asyncio loop of their own, in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any

import redis.asyncio as aredis

from redisched.history.db import open_pool
from redisched.history.schedules import ScheduleStore
from redisched.history.snapshotter import Snapshotter, wait_caught_up
from redisched.history.tasks import TaskStore
from redisched.models import SCHEDULERS
from redisched.queue.layout import QueueLayout
from redisched.queue.queue import TaskQueues
from tests.faults.common import layout


class Background:
    """An asyncio loop in a thread running the snapshotter and a lease reaper (what
    ``redisched worker`` runs), so a test can block, kill and sleep freely."""

    def __init__(
        self, redis_url: str, dsn: str, prefix: str, *, lease_ms: int = 2000, reap_every: float = 0.2,
        features: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.redis_url, self.dsn, self.prefix = redis_url, dsn, prefix
        self.features = features or {}
        self.lease_ms, self.reap_every = lease_ms, reap_every
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="faults-background", daemon=True)
        self.reaped = 0
        self.reap_errors = 0
        self._tasks: dict[str, asyncio.Task] = {}

    def __enter__(self) -> Background:
        self.thread.start()
        try:
            self.call(self._open())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _open(self) -> None:
        # No socket timeout: the snapshotter blocks on its streams (see app.open_redis).
        self.redis = aredis.Redis(connection_pool=aredis.BlockingConnectionPool.from_url(self.redis_url, max_connections=512))
        self.pool = await open_pool(self.dsn, max_size=4, timeout=5)
        self.queues = TaskQueues(self.redis, layout(self.prefix, lease_ms=self.lease_ms, **self.features))
        self.tasks = TaskStore(self.pool)
        self.schedules = ScheduleStore(self.pool, self.redis, self.queues.layout)
        self.snapshotter = Snapshotter(
            self.redis, self.tasks, self.schedules, layout=self.queues.layout, forget=self.queues.forget_finished, block_ms=50
        )
        self._tasks["snapshotter"] = asyncio.create_task(self.snapshotter.run())
        self._tasks["reaper"] = asyncio.create_task(self._reap())

    async def _reap(self) -> None:
        while True:
            for scheduler_id in SCHEDULERS:
                try:
                    requeued, failed = await self.queues.reap(scheduler_id)
                    self.reaped += requeued + failed
                except Exception:  # Redis away: next round
                    self.reap_errors += 1
            await asyncio.sleep(self.reap_every)

    def stop_reaper(self) -> None:
        async def stop() -> None:
            task = self._tasks.pop("reaper", None)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        self.call(stop())

    def drained(self, timeout: float = 30) -> bool:
        """Whether the snapshotter applied every event written before this call."""
        probe = aredis.Redis.from_url(self.redis_url, socket_timeout=5)

        async def wait() -> bool:
            try:
                return await wait_caught_up(probe, QueueLayout(self.prefix), timeout=timeout)
            finally:
                await probe.aclose()

        return self.call(wait(), timeout=timeout + 10)

    def close(self) -> None:
        async def shut() -> None:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            if hasattr(self, "pool"):
                await self.pool.close()
            if hasattr(self, "redis"):
                await self.redis.aclose()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(shut(), timeout=20)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        self.loop.close()
