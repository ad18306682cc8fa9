"""Task history in Postgres: the snapshotter's batched upserts and the API's reads."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
from psycopg import AsyncConnection, sql
from psycopg.rows import args_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from redisched.errors import BadRequest, NotFound
from redisched.history.db import Where, queries
from redisched.models import STATUSES, Task, TaskStatus
from redisched.queue.records import TaskRecord

Q = queries("tasks.sql")

# Columns a PATCH may set (the id is the row's identity, not a value).
PATCHABLE = (
    "scheduler_id",
    "schedule_id",
    "organisation",
    "priority",
    "status",
    "type",
    "hash",
    "data",
    "created_at",
)  # modified_at is the patch's own time


class Event(NamedTuple):
    """One entry of a queue's event stream (see queue/records.py)."""

    op: str
    record: TaskRecord
    sched: str | None  # "new" or "linked" on a push that links a schedule


class StatusChange(msgspec.Struct):
    """One change of a task: what made it (push, pop, patch, reap), its status after, when."""

    op: str
    status: str
    at: datetime


def _history_row(event: Event) -> dict[str, Any]:
    record = event.record
    return {"id": record.id, "rev": record.rev, "op": event.op, "status": record.status, "modified_at": record.modified_at}


class LiveTask(NamedTuple):
    task: Task
    tries: int
    rev: str  # as in TaskRecord


def _task(*row: Any) -> Task:
    """A Task from the columns id .. modified_at, data as JSON text."""
    id, scheduler_id, schedule_id, organisation, priority, status, type, hash, data, created, modified = row
    return Task(
        id=id,
        scheduler_id=scheduler_id,
        schedule_id=schedule_id,
        organisation=organisation,
        priority=priority,
        status=TaskStatus(status),
        type=type,
        hash=hash,
        data=msgspec.Raw(data.encode()),
        created_at=created,
        modified_at=modified,
    )


def _live_task(*row: Any) -> LiveTask:
    *task, tries, rev = row
    return LiveTask(_task(*task), tries, str(rev))


def latest_records(events: Iterable[Event]) -> list[TaskRecord]:
    """The highest-rev record of each task among ``events``; events that did not change the
    data carry none, so the newest data seen goes along with it."""
    latest: dict[str, TaskRecord] = {}
    for event in sorted(events, key=lambda e: int(e.record.rev)):
        seen = latest.get(event.record.id)
        record = event.record
        if seen is not None and record.data is None and seen.data is not None:
            record = msgspec.structs.replace(record, data=seen.data)
        latest[record.id] = record
    return list(latest.values())


class TaskStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def apply(self, events: Iterable[Event], conn: AsyncConnection | None = None) -> None:
        """Upsert the tasks of ``events``, highest rev winning, in one statement: on ``conn``
        (inside the caller's transaction) or in a transaction of its own."""
        events = list(events)
        records = latest_records(events)
        if not records:
            return
        batch = msgspec.json.encode(records).decode()
        history = msgspec.json.encode([_history_row(event) for event in events]).decode()
        if conn is not None:
            await conn.execute(Q["upsert"], [batch])
            await conn.execute(Q["record_history"], [history])
            return
        async with self.pool.connection() as own, own.transaction():
            await own.execute(Q["upsert"], [batch])
            await own.execute(Q["record_history"], [history])

    async def history(self, task_id: uuid.UUID | str, limit: int = 200) -> list[StatusChange]:
        """A task's changes as the history holds them, oldest first (the newest ``limit``)."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(Q["history"], [task_id, limit])).fetchall()
        return [StatusChange(op, status, at) for op, status, at in rows]

    async def get(self, task_id: uuid.UUID | str) -> Task | None:
        async with self.pool.connection() as conn:
            cursor = conn.cursor(row_factory=args_row(_task))
            return await (await cursor.execute(Q["get"], [task_id])).fetchone()

    async def list(
        self,
        node: Any = None,
        *,
        scheduler_id: str | None = None,
        organisation: str | None = None,
        task_type: str | None = None,
        status: str | None = None,
        min_created_at: datetime | None = None,
        max_created_at: datetime | None = None,
        offset: int = 0,
        limit: int = 10,
    ) -> tuple[int, list[Task]]:
        """(count, page) of the tasks matching every given filter, newest first."""
        exact = {"scheduler_id": scheduler_id, "organisation": organisation, "type": task_type, "status": status}
        where = Where()
        for column, value in exact.items():
            where.equal(column, value)
        where.between("created_at", min_created_at, max_created_at)
        where.filter(node, "tasks")
        counted = node is None and min_created_at is None and max_created_at is None
        async with self.pool.connection() as conn:
            count = await self._count(conn, where, counted)
            if limit == 0:
                return count, []
            cursor = conn.cursor(row_factory=args_row(_task))
            query = sql.SQL(Q["select"]).format(where=where.clause())
            await cursor.execute(query, [*where.params, offset, limit])
            return count, await cursor.fetchall()

    async def _count(self, conn: AsyncConnection, where: Where, counted: bool) -> int:
        query = sql.SQL(Q["count_from_counters" if counted else "count"]).format(where=where.clause())
        (count,) = await (await conn.execute(query, where.params)).fetchone()
        return count

    async def status_counts(self) -> dict[tuple[str, str], int]:
        """(scheduler_id, status) -> number of tasks, from the counters."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(Q["status_counts"])).fetchall()
        return {(scheduler_id, status): n for scheduler_id, status, n in rows}

    async def served_by_organisation(self, organisations: list[str]) -> dict[tuple[str, str], int]:
        """(scheduler_id, organisation) -> tasks handed out so far, for these organisations."""
        if not organisations:
            return {}
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(Q["served_by_organisation"], [organisations])).fetchall()
        return {(scheduler_id, organisation): n for scheduler_id, organisation, n in rows}

    async def stats(self, scheduler_id: str | None = None, organisation_id: str | None = None) -> dict[str, dict[str, int]]:
        """Tasks modified in the last 24 h per hour of modified_at (UTC), newest hour first:
        ``{"2025-06-01T10:00:00+00:00": {<each status>: n, "total": n}}``."""
        params = {"scheduler_id": scheduler_id, "organisation": organisation_id}
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(Q["stats"], params)).fetchall()
        hours: dict[str, dict[str, int]] = {}
        for hour, status, n in rows:
            counts = hours.setdefault(hour.isoformat(), dict.fromkeys([*STATUSES, "total"], 0))
            counts[status] = n
            counts["total"] += n
        return hours

    async def live(self, scheduler_id: str) -> list[LiveTask]:
        """Queued, dispatched and running tasks of a scheduler, oldest first."""
        async with self.pool.connection() as conn:
            cursor = conn.cursor(row_factory=args_row(_live_task))
            return await (await cursor.execute(Q["live"], [scheduler_id])).fetchall()

    async def patch(self, task_id: uuid.UUID | str, fields: dict[str, Any]) -> Task:
        """Set the given Task fields of a task Redis no longer holds; NotFound if absent."""
        given = {column: _column_value(fields[column]) for column in PATCHABLE if column in fields}
        if not given:
            raise BadRequest("no data to patch")
        assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in given)
        query = sql.SQL(Q["patch"]).format(assignments=assignments)
        async with self.pool.connection() as conn:
            cursor = conn.cursor(row_factory=args_row(_task))
            task = await (await cursor.execute(query, [*given.values(), task_id])).fetchone()
        if task is None:
            raise NotFound(f"task not found, by task_id: {task_id}")
        return task


def _column_value(value: Any) -> Any:
    if isinstance(value, TaskStatus):
        return value.value
    if isinstance(value, dict):
        return Jsonb(value)
    return value
