"""What every scheduler works with, in one object, so tests can hand in fakes and a clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from redisched.clients.http import BytesClient, KatalogusClient, OctopoesClient
from redisched.history.scheduler_queries import SchedulerHistory
from redisched.models import utcnow
from redisched.schedulers.outlet import TaskOutlet

T = TypeVar("T")

Clock = Callable[[], datetime]


@dataclass
class SchedulerContext:
    outlet: TaskOutlet
    history: SchedulerHistory
    katalogus: KatalogusClient
    octopoes: OctopoesClient
    bytes: BytesClient
    grace_period: timedelta = timedelta(seconds=86400)
    clock: Clock = utcnow
    concurrency: int = 10  # decisions in flight at once (each asks Bytes; its pool is 10)


async def gather_bounded(calls: Iterable[Awaitable[T]], limit: int) -> list[T]:
    """Await ``calls`` with at most ``limit`` running at once; results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def bounded(call: Awaitable[T]) -> T:
        async with semaphore:
            return await call

    # A TaskGroup, not gather: when one call fails the others are cancelled, not orphaned.
    # The first failure is raised as itself, so callers (and the listener) see its type.
    try:
        async with asyncio.TaskGroup() as group:
            running = [group.create_task(bounded(call)) for call in calls]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in running]
