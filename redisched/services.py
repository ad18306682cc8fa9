"""The application layer: the connections a process runs on (``Services``, built once by
``redisched.app``) and the use-cases that span Redis and Postgres, for the routes, the
schedulers and any other worker alike. A task lives in Redis while it is queued, dispatched
or running; Postgres keeps every task, and is where a finished one is found.

Nothing here holds state of its own: any number of processes serve side by side.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from redis.asyncio import Redis

from redisched import filters
from redisched.clients.http import ServiceClients
from redisched.clients.http.base import TTLCache
from redisched.config import Settings
from redisched.errors import Conflict, NotFound, StaleLease
from redisched.history.schedules import ScheduleStore
from redisched.history.snapshotter import wait_caught_up
from redisched.history.tasks import TaskStore
from redisched.models import LEASED, SCHEDULERS, Task, us_to_datetime
from redisched.queue.queue import TaskQueues
from redisched.queue.records import TaskRecord, record_from_task

LIVE = LEASED | {"queued"}


@dataclass
class Services:
    settings: Settings
    redis: Redis
    queues: TaskQueues
    tasks: TaskStore
    schedules: ScheduleStore
    externals: ServiceClients
    read_wait_seconds: float = 1.0  # how long a history read waits for the snapshotter
    # The last /health?externals=true probes: each dependency is asked once per period,
    # however many callers ask (concurrent callers share one round of probes).
    health_checks: TTLCache[None, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.health_checks = TTLCache(self.settings.health_cache_seconds)

    async def history_caught_up(self, scheduler_id: str | None = None) -> None:
        """Let Postgres catch up with every queue change acknowledged before this call (bounded:
        after ``read_wait_seconds`` the read goes ahead on what Postgres has)."""
        queues = [scheduler_id] if scheduler_id in SCHEDULERS else list(SCHEDULERS)
        await wait_caught_up(self.redis, self.queues.layout, queues, timeout=self.read_wait_seconds)

    # --- tasks across the two stores -------------------------------------------------------

    async def get_task(self, task_id: uuid.UUID) -> Task:
        """The task: live from Redis, else as Postgres holds it."""
        record = await self.queues.get(task_id)
        if record is not None:
            return record.to_task()
        task = await self.tasks.get(task_id)
        if task is None:
            raise task_not_found(task_id)
        return task

    async def patch_task(self, task_id: uuid.UUID, changes: dict[str, Any], token: str | None = None) -> Task:
        """Any Task field, no transition rules. A live task changes in Redis (``token``, if
        given, checked against its lease); a finished one in Postgres, and back in Redis when
        its new status is live again (refused while a twin with the same hash is queued)."""
        record = await self.queues.patch(task_id, changes, token=token)
        if record is not None:
            return record.to_task()
        return await self._patch_not_live(task_id, changes, token)

    async def patch_and_pop(
        self, task_id: uuid.UUID, changes: dict[str, Any], token: str | None, node: filters.Node | None, limit: int,
        status: str = "dispatched",
    ) -> tuple[Task, list[TaskRecord]]:
        """Finish and fetch: ``patch_task``, then, once the patch went through, up to ``limit``
        tasks popped from the task's queue with ``node``, handed out as ``status``. A live task
        and a pop's lease token: one script call (lua/pop_next.lua); a refused patch pops nothing."""
        record, popped = await self.queues.pop_next(task_id, changes, token, node, limit, status=status)
        if record is not None:
            return record.to_task(), popped
        task = await self._patch_not_live(task_id, changes, token)
        if task.scheduler_id not in SCHEDULERS:  # a pre-v1.20 queue's task, kept in the history only
            return task, []
        return task, await self.queues.pop(task.scheduler_id, node, limit, status=status)

    async def _patch_not_live(self, task_id: uuid.UUID, changes: dict[str, Any], token: str | None) -> Task:
        """The patch of a task no queue holds: a finished one, in Postgres."""
        if token:  # the lease ended with the task: whoever holds this token lost it
            raise StaleLease("the lease token is not the task's current one")
        stored = await self.tasks.get(task_id)
        if stored is None:
            raise task_not_found(task_id)
        patched = _with_changes(stored, changes)
        if patched.status.value in LIVE and not await self.queues.restore(record_from_task(patched)):
            raise Conflict("a task with the same hash is already queued")
        return await self.tasks.patch(task_id, changes)

    async def extend_lease(self, task_id: uuid.UUID, token: str, seconds: float) -> datetime:
        """The lease of a dispatched or running task now ends ``seconds`` from now: when."""
        where = await self.queues.locate(task_id)
        if where is None:
            raise task_not_found(task_id)
        expires_ms = await self.queues.extend_lease(where.queue_id, str(task_id), token, seconds, where.partition)
        return us_to_datetime(expires_ms * 1000)


def task_not_found(task_id: uuid.UUID) -> NotFound:
    return NotFound(f"task not found, by task_id: {task_id}")


def _with_changes(task: Task, changes: dict[str, Any]) -> Task:
    values = {name: value for name, value in changes.items() if name not in ("id", "modified_at")}
    if "data" in values:
        values["data"] = msgspec.Raw(msgspec.json.encode(values["data"]))
    return msgspec.structs.replace(task, **values)
