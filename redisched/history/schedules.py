"""Schedules in Postgres, and their Redis mirror kept in step.

The mirror (``<p>:{<q>}:schedules``, hash -> ``"<id>|<1|0>"``) lets the push script link a
task to its schedule without a Postgres round trip. The store changes a mirror entry only
while it holds the schedule's row (or owns the entry it just created), and the push script
only adds entries that are absent, so check-then-change on an entry is race-free.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import msgspec
import redis.asyncio as aredis
from croniter import croniter
from psycopg import AsyncConnection, sql
from psycopg.errors import UniqueViolation
from psycopg.rows import kwargs_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from redisched.config import GRACE_PERIOD_SECONDS
from redisched import limits
from redisched.errors import BadRequest, Conflict, NotFound, ValidationFailed
from redisched.history.db import Where, queries
from redisched.history.tasks import Event
from redisched.models import SCHEDULERS, MalformedPayload, Schedule, ScheduleCreate, check_pushed_payload, utcnow
from redisched.models import with_aware_datetimes
from redisched.payload_errors import cron_wording, pydantic_wording
from redisched.queue.layout import QueueLayout

Q = queries("schedules.sql")

PATCHABLE = ("hash", "data", "enabled", "schedule", "deadline_at")
# A boefje schedule without cron is due again after the grace period plus up to this much.
BOEFJE_JITTER = timedelta(hours=5)


def next_cron_run(expression: str, after: datetime) -> datetime:
    """The first run of ``expression`` (croniter syntax, ``L`` included) after ``after``;
    ValueError when it is not a valid expression."""
    return croniter(expression, after).get_next(datetime)


def check_cron(expression: str | None) -> None:
    """A 400 in mula's words (its Schedule model's pydantic error) for an invalid expression."""
    if expression is None:
        return
    try:
        next_cron_run(expression, utcnow())
    except (ValueError, KeyError) as exc:
        raise ValidationFailed(cron_wording(expression)) from exc


def push_deadline(scheduler_id: str, cron: str | None, now: datetime, grace_period: int) -> datetime | None:
    """Where a push moves its schedule's deadline: the next cron run; without cron, a boefje
    is due after the grace period and a random 0-5 h (spreading the load), a report never."""
    if cron:
        return next_cron_run(cron, now)
    if scheduler_id == "boefje":
        return now + timedelta(seconds=grace_period) + random.random() * BOEFJE_JITTER
    return None


def mirror_value(schedule_id: uuid.UUID | str, enabled: bool) -> str:
    return f"{schedule_id}|{int(enabled)}"


class ScheduleStore:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        redis: aredis.Redis,
        layout: QueueLayout,
        *,
        grace_period: int = GRACE_PERIOD_SECONDS,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.layout = layout
        self.grace_period = grace_period

    def _mirror(self, scheduler_id: str, schedule_hash: str) -> str:
        """The mirror the push script of this hash's partition reads."""
        return self.layout.for_hash(scheduler_id, schedule_hash).schedules

    # --- the API's CRUD ----------------------------------------------------------------------

    async def create(self, new: ScheduleCreate) -> Schedule:
        """Store a new schedule. Its hash is claimed in the mirror first (HSETNX: atomic
        against pushes and other creates), then in Postgres (the unique index)."""
        schedule = _validated(new)
        key = self._mirror(schedule.scheduler_id, schedule.hash)
        conflict = Conflict(f"schedule with the same hash already exists: {schedule.hash}")
        if not await self.redis.hsetnx(key, schedule.hash, mirror_value(schedule.id, True)):
            raise conflict
        try:
            async with self.pool.connection() as conn:
                cursor = conn.cursor(row_factory=kwargs_row(Schedule))
                return await (await cursor.execute(Q["insert"], _row_params(schedule))).fetchone()
        except UniqueViolation:
            await self._restore_entry(key, schedule.hash, schedule.id)
            raise conflict from None
        except BaseException:
            await self._release(key, schedule.hash, schedule.id)
            raise

    async def get(self, schedule_id: uuid.UUID | str) -> Schedule | None:
        async with self.pool.connection() as conn:
            cursor = conn.cursor(row_factory=kwargs_row(Schedule))
            return await (await cursor.execute(Q["get"], [schedule_id])).fetchone()

    async def list(
        self,
        *,
        scheduler_id: str | None = None,
        organisation: str | None = None,
        schedule_hash: str | None = None,
        enabled: bool | None = None,
        min_deadline_at: datetime | None = None,
        max_deadline_at: datetime | None = None,
        min_created_at: datetime | None = None,
        max_created_at: datetime | None = None,
        offset: int = 0,
        limit: int = 10,
    ) -> tuple[int, list[Schedule]]:
        """(count, page) of the schedules matching every given filter, newest first."""
        where = Where()
        where.equal("scheduler_id", scheduler_id)
        where.equal("organisation", organisation)
        where.equal("hash", schedule_hash)
        where.equal("enabled", enabled)
        where.between("deadline_at", min_deadline_at, max_deadline_at)
        where.between("created_at", min_created_at, max_created_at)
        return await self._page(where, offset, limit)

    async def search(self, node: Any, offset: int = 0, limit: int = 10) -> tuple[int, list[Schedule]]:
        """(count, page) of the schedules matching a FilterRequest tree, newest first."""
        where = Where()
        where.filter(node, "schedules")
        return await self._page(where, offset, limit)

    async def _page(self, where: Where, offset: int, limit: int) -> tuple[int, list[Schedule]]:
        async with self.pool.connection() as conn:
            counted = await conn.execute(sql.SQL(Q["count"]).format(where=where.clause()), where.params)
            (count,) = await counted.fetchone()
            if limit == 0:
                return count, []
            cursor = conn.cursor(row_factory=kwargs_row(Schedule))
            query = sql.SQL(Q["select"]).format(where=where.clause())
            await cursor.execute(query, [*where.params, offset, limit])
            return count, await cursor.fetchall()

    async def patch(self, schedule_id: uuid.UUID | str, fields: dict[str, Any]) -> Schedule:
        """Copy the given fields (deadline and hash are not recomputed) and keep the mirror's
        entry (hash, enabled) in step."""
        given = {column: fields[column] for column in PATCHABLE if column in fields}
        if not given:
            raise BadRequest("no data to patch")
        limits.check_columns({name: value for name, value in given.items() if name != "data"})
        if "data" in given:
            limits.check_data(given["data"])
        check_cron(given.get("schedule"))
        if "data" in given:
            given["data"] = Jsonb(with_aware_datetimes(given["data"]))
        assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in given)
        async with self.pool.connection() as conn, conn.transaction():
            cursor = conn.cursor(row_factory=kwargs_row(Schedule))
            old = await (await cursor.execute(Q["get_for_update"], [schedule_id])).fetchone()
            if old is None:
                raise NotFound(f"schedule not found, by schedule_id: {schedule_id}")
            update = sql.SQL(Q["update"]).format(assignments=assignments)
            try:
                await cursor.execute(update, [*given.values(), schedule_id])
            except UniqueViolation:
                raise Conflict(f"schedule with the same hash already exists: {fields['hash']}") from None
            new = await cursor.fetchone()
            await self._follow(old, new)
        return new

    async def delete(self, schedule_id: uuid.UUID | str) -> list[tuple[str, str]]:
        """Remove a schedule (absent: nothing to do); its tasks keep no schedule_id in Postgres.
        Returns the live ones, (scheduler id, task id), for the caller to unlink in Redis."""
        async with self.pool.connection() as conn, conn.transaction():
            row = await (await conn.execute(Q["delete"], [schedule_id])).fetchone()
            if row is None:
                return []
            live = await (await conn.execute(Q["detach_tasks"], [schedule_id])).fetchall()
            scheduler_id, schedule_hash = row
            await self._release(self._mirror(scheduler_id, schedule_hash), schedule_hash, schedule_id)
        return [(task_scheduler, task_id) for task_scheduler, task_id in live]

    # --- the schedulers' timers --------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, for ``due`` and ``advance``."""
        async with self.pool.connection() as conn, conn.transaction():
            yield conn

    async def due(self, conn: AsyncConnection, scheduler_id: str, now: datetime, limit: int) -> list[Schedule]:
        """Enabled schedules due at ``now``, locked until the caller's transaction ends;
        rows locked by another worker are skipped."""
        cursor = conn.cursor(row_factory=kwargs_row(Schedule))
        return await (await cursor.execute(Q["due"], [scheduler_id, now, limit])).fetchall()

    async def advance(self, conn: AsyncConnection, schedule: Schedule, now: datetime) -> datetime | None:
        """Move the deadline to the next cron run after ``now``, or clear it without cron."""
        deadline = next_cron_run(schedule.schedule, now) if schedule.schedule else None
        await conn.execute(Q["set_deadline"], [deadline, schedule.id])
        return deadline

    # --- the snapshotter's push effects ------------------------------------------------------

    async def apply_pushes(self, conn: AsyncConnection, events: Iterable[Event], now: datetime) -> None:
        """Insert the schedules pushes created (``sched`` new) and move the deadline of every
        enabled schedule a push linked (new or linked), on the caller's transaction."""
        pushes = [event for event in events if event.sched in ("new", "linked") and event.record.schedule_id]
        created = {e.record.schedule_id: e.record for e in pushes if e.sched == "new"}
        if created:
            await conn.execute(Q["insert_pushed"], [msgspec.json.encode(list(created.values())).decode()])
        linked = sorted({e.record.schedule_id for e in pushes})
        if not linked:
            return
        rows = await (await conn.execute(Q["lock_linked"], [linked])).fetchall()
        deadlines = [push_deadline(scheduler_id, cron, now, self.grace_period) for _, scheduler_id, cron in rows]
        await conn.execute(Q["set_deadlines"], [[row[0] for row in rows], deadlines])

    # --- the mirror --------------------------------------------------------------------------

    async def rebuild_mirror(self, scheduler_id: str) -> int:
        """Write every schedule of a scheduler into its mirror (after Redis lost data);
        returns how many."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(Q["mirror_entries"], [scheduler_id])).fetchall()
        by_mirror: dict[str, dict[str, str]] = {}
        for schedule_hash, id_, enabled in rows:
            key = self._mirror(scheduler_id, schedule_hash)
            by_mirror.setdefault(key, {})[schedule_hash] = mirror_value(id_, enabled)
        for key, entries in by_mirror.items():
            await self.redis.hset(key, mapping=entries)
        return len(rows)

    async def _follow(self, old: Schedule, new: Schedule) -> None:
        """Bring the mirror in step with a patch of ``old`` into ``new``."""
        key = self._mirror(new.scheduler_id, new.hash)
        value = mirror_value(new.id, new.enabled)
        if new.hash == old.hash:
            if new.enabled != old.enabled:
                await self.redis.hset(key, new.hash, value)
            return
        if not await self.redis.hsetnx(key, new.hash, value):
            if await self._owner(key, new.hash) != str(new.id):
                raise Conflict(f"schedule with the same hash already exists: {new.hash}")
            await self.redis.hset(key, new.hash, value)
        await self._release(self._mirror(old.scheduler_id, old.hash), old.hash, old.id)

    async def _owner(self, key: str, schedule_hash: str) -> str | None:
        """The schedule id the mirror has for a hash."""
        entry = await self.redis.hget(key, schedule_hash)
        if isinstance(entry, bytes):
            entry = entry.decode()
        return entry.partition("|")[0] if entry else None

    async def _release(self, key: str, schedule_hash: str, schedule_id: uuid.UUID | str) -> None:
        """Drop the mirror's entry for a hash if it still names this schedule."""
        if await self._owner(key, schedule_hash) == str(schedule_id):
            await self.redis.hdel(key, schedule_hash)

    async def _restore_entry(self, key: str, schedule_hash: str, claimed_by: uuid.UUID) -> None:
        """The mirror lacked a hash Postgres has: point the entry at the stored schedule."""
        async with self.pool.connection() as conn:
            stored = await (await conn.execute(Q["mirror_entry"], [schedule_hash])).fetchone()
        if stored is None:
            await self._release(key, schedule_hash, claimed_by)
        else:
            await self.redis.hset(key, schedule_hash, mirror_value(*stored))


def _validated(new: ScheduleCreate) -> Schedule:
    """The Schedule to store for a create request, or the API's 400 for it."""
    if new.deadline_at is None and new.schedule is None:
        raise BadRequest("Either deadline_at or schedule must be provided")
    check_cron(new.schedule)
    if new.scheduler_id not in SCHEDULERS:
        raise BadRequest(f"Scheduler {new.scheduler_id} not found")
    data = with_aware_datetimes(new.data)
    try:
        schedule_hash = check_pushed_payload(new.scheduler_id, data).hash()
    except MalformedPayload as exc:
        raise BadRequest(pydantic_wording(new.scheduler_id, data) or str(exc)) from None
    limits.check_columns({"organisation": new.organisation})
    limits.check_data(data)
    now = utcnow()
    return Schedule(
        id=uuid.uuid4(),
        scheduler_id=new.scheduler_id,
        organisation=new.organisation,
        hash=schedule_hash,
        data=data,
        schedule=new.schedule,
        deadline_at=new.deadline_at or next_cron_run(new.schedule, now),
        created_at=now,
        modified_at=now,
    )


def _row_params(schedule: Schedule) -> dict[str, Any]:
    params = msgspec.structs.asdict(schedule)
    params["data"] = Jsonb(schedule.data)
    return params
