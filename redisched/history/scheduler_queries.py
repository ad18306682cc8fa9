"""What the schedulers ask of the history beyond the stores' own methods: the newest task of
a hash, due schedules claimed for a while (so checking them needs no open transaction), and
report schedules fired inside the transaction that locks them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import NamedTuple

from redisched.errors import Conflict
from redisched.history.db import queries
from redisched.history.schedules import ScheduleStore
from redisched.history.snapshotter import wait_caught_up
from redisched.history.tasks import TaskStore
from redisched.models import Schedule, ScheduleCreate, TaskStatus

log = logging.getLogger(__name__)

Q = queries("scheduler_queries.sql")


class TaskState(NamedTuple):
    id: uuid.UUID
    status: TaskStatus
    modified_at: datetime


CATCH_UP_SECONDS = 5.0


class HistoryBehind(Exception):
    """The snapshotter lags too far to judge on the history now; try again later."""


class SchedulerHistory:
    def __init__(self, tasks: TaskStore, schedules: ScheduleStore) -> None:
        self.tasks = tasks
        self.schedules = schedules

    async def latest_tasks(self, hashes: Sequence[str], queue: str = "boefje") -> dict[str, TaskState]:
        """Hash -> the newest task with that hash, for the hashes that have one. The history
        is written behind Redis: first wait (bounded) until it holds what the queue did before
        this call, or a task popped a moment ago would look absent and be created twice.
        Raises HistoryBehind when it does not catch up in time: decide later, not on old news."""
        if not hashes:
            return {}
        caught_up = await wait_caught_up(
            self.schedules.redis, self.schedules.layout, (queue,), timeout=CATCH_UP_SECONDS,
        )
        if not caught_up:
            raise HistoryBehind(f"the history of {queue} is more than {CATCH_UP_SECONDS} s behind")
        async with self.tasks.pool.connection() as conn:
            rows = await (await conn.execute(Q["latest_by_hash"], [list(hashes)])).fetchall()
        return {h: TaskState(id_, TaskStatus(status), modified) for h, id_, status, modified in rows}

    async def mark_failed(self, task_id: uuid.UUID) -> None:
        await self.tasks.patch(task_id, {"status": TaskStatus.FAILED})

    async def claim_due(self, scheduler_id: str, now: datetime, limit: int, hold_until: datetime) -> list[Schedule]:
        """Due schedules, their deadline moved to ``hold_until`` in the same transaction: other
        workers skip them while this one checks them, and if this one dies they come back then."""
        async with self.schedules.transaction() as conn:
            due = await self.schedules.due(conn, scheduler_id, now, limit)
            if due:
                await conn.execute(Q["set_deadlines"], [hold_until, [s.id for s in due]])
        return due

    async def fire_due(
        self, scheduler_id: str, now: datetime, limit: int, fire: Callable[[Schedule], Awaitable[None]]
    ) -> int:
        """Call ``fire`` for each due schedule and advance its deadline (next cron run, or
        none), all while the rows are locked; returns how many fired."""
        async with self.schedules.transaction() as conn:
            due = await self.schedules.due(conn, scheduler_id, now, limit)
            for schedule in due:
                await fire(schedule)
                await self.schedules.advance(conn, schedule, now)
        return len(due)

    async def postpone(self, schedule_id: uuid.UUID, deadline: datetime) -> None:
        async with self.tasks.pool.connection() as conn:
            await conn.execute(Q["set_deadlines"], [deadline, [schedule_id]])

    async def disable(self, schedule_id: uuid.UUID) -> None:
        await self.schedules.patch(schedule_id, {"enabled": False})

    async def set_cron(self, schedule_id: uuid.UUID, cron: str, deadline: datetime) -> None:
        await self.schedules.patch(schedule_id, {"schedule": cron, "deadline_at": deadline})

    async def delete_schedule(
        self, scheduler_id: str, schedule_hash: str
    ) -> tuple[uuid.UUID, list[tuple[str, str]]] | None:
        """Delete the schedule with this hash: (its id, its live tasks to unlink in Redis), or
        None when there is none."""
        _, found = await self.schedules.list(scheduler_id=scheduler_id, schedule_hash=schedule_hash, limit=1)
        if not found:
            return None
        return found[0].id, await self.schedules.delete(found[0].id)

    async def create_schedule(self, new: ScheduleCreate) -> bool:
        """False when a schedule with the same hash exists already."""
        try:
            await self.schedules.create(new)
        except Conflict:
            return False
        return True
