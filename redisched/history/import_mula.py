"""Moving an OpenKAT install from mula: ``redisched import-mula <mula database URL>``.

Reads a mula v1.20 database (alembic revision 0010; anything else is refused) in one
consistent snapshot and writes into redisched:

- every schedule, as it is (id, hash, data, cron, deadline, enabled, created/modified);
- every task into the history, at rev 0 so that whatever redisched does with it later wins;
- the live tasks back into Redis: queued ones onto their queue (their priority and
  created_at keep their place), dispatched and running ones as leased, so that the runners
  holding them can still PATCH them (token-less, as with mula), and the lease reaper takes
  them back if nobody does. Redis gets them by the restore script reconciliation uses.

What mula wrote is normalised on the way: the status enum's names (``QUEUED``) become the
API's values, a missing priority 0, and the datetimes inside ``data`` (mula's
``json.dumps(default=str)`` writes ``2025-01-01 10:00:00+00:00``, naive when the sender's
was) become ISO 8601 with an offset, UTC when there was none, as redisched's push writes them.

Idempotent: rows redisched already has (by id, or a schedule by hash) are left alone, a live
task Redis already holds is not touched, so a second run imports nothing and changes nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import msgspec
import psycopg
from psycopg import AsyncConnection, IsolationLevel
from psycopg_pool import AsyncConnectionPool

from redisched.history.db import queries
from redisched.history.schedules import ScheduleStore
from redisched.history.tasks import TaskStore
from redisched.models import SCHEDULERS, MalformedPayload, payload_hash
from redisched.queue.queue import TaskQueues
from redisched.queue.records import record_from_task

Q = queries("import_mula.sql")

MULA_REVISION = "0010"  # the alembic head of mula v1.20.x
BATCH_ROWS = 2000
RESTORE_BATCH = 500  # restore calls sent together (one round trip through the pipeliner)
LIVE = ("queued", "dispatched", "running")

# str(datetime) and isoformat(): a space or T between date and time, an optional offset.
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?")
_encode = msgspec.json.Encoder().encode


class MulaImportError(Exception):
    """The import cannot start: the mula database is out of reach or not one it knows."""


class UnknownMulaSchema(MulaImportError):
    """The database is not a mula v1.20 database (or not one at all)."""


@dataclass
class MulaImport:
    """What one run imported (new) and found already there."""

    schedules: int = 0
    schedules_present: int = 0
    schedules_skipped: int = 0  # no hash and data that gives none
    tasks: Counter[str] = field(default_factory=Counter)  # new, by status
    tasks_present: int = 0
    queued: int = 0  # put back on their queue
    leased: int = 0  # dispatched or running, leased again
    live_present: int = 0  # already live in Redis
    unknown_scheduler: int = 0  # live in mula under a scheduler redisched does not run

    def summary(self) -> str:
        statuses = ", ".join(f"{n} {status}" for status, n in sorted(self.tasks.items())) or "none"
        lines = [
            f"schedules: {self.schedules} new, {self.schedules_present} already there"
            + (f", {self.schedules_skipped} skipped (no hash and data that gives none)" if self.schedules_skipped else ""),
            f"tasks: {sum(self.tasks.values())} new ({statuses}), {self.tasks_present} already there",
            f"live tasks into Redis: {self.queued} queued, {self.leased} dispatched/running leased, "
            f"{self.live_present} already live",
        ]
        if self.unknown_scheduler:
            lines.append(f"{self.unknown_scheduler} live tasks of schedulers redisched does not run stay in the history only")
        return "\n".join(lines)


async def import_mula(
    mula_dsn: str, queues: TaskQueues, tasks: TaskStore, schedules: ScheduleStore
) -> MulaImport:
    """Import the mula database at ``mula_dsn``; MulaImportError when it cannot be read,
    UnknownMulaSchema for a schema other than mula v1.20's."""
    result = MulaImport()
    mula_live: dict[str, set[str]] = {}  # scheduler_id -> ids of the tasks live in mula
    async with await _connect_read_only(mula_dsn) as mula:
        await _check_revision(mula)
        async with mula.transaction():
            await _copy_schedules(mula, tasks.pool, result)
            await _copy_tasks(mula, tasks.pool, result, mula_live)
    for scheduler_id, scheduler in SCHEDULERS.items():
        if scheduler.has_schedules:  # pushes link to the imported schedules from now on
            await schedules.rebuild_mirror(scheduler_id)
        await _restore_live(queues, tasks, scheduler_id, mula_live.pop(scheduler_id, set()), result)
    result.unknown_scheduler = sum(len(ids) for ids in mula_live.values())
    return result


async def check_target(db_uri: str) -> None:
    """Refuse a redisched database that is mula's own (its tables share mula's names)."""
    query = "SELECT to_regclass('alembic_version'), to_regclass('tasks'), to_regclass('schema_migrations')"
    async with await psycopg.AsyncConnection.connect(db_uri) as conn:
        alembic, tasks, ours = await (await conn.execute(query)).fetchone()
    if alembic is not None or (tasks is not None and ours is None):
        raise MulaImportError(
            "redisched's database (SCHEDULER_DB_URI) holds mula's tables (or another schema's): "
            "give redisched a database of its own"
        )


async def _connect_read_only(dsn: str) -> AsyncConnection:
    try:
        conn = await psycopg.AsyncConnection.connect(_libpq_url(dsn))
    except psycopg.OperationalError as exc:
        raise MulaImportError(f"cannot connect to the mula database: {str(exc).strip()}") from None
    await conn.execute("SET TIME ZONE 'UTC'")
    await conn.commit()
    # One snapshot for the whole read: a mula still writing cannot make it inconsistent.
    await conn.set_isolation_level(IsolationLevel.REPEATABLE_READ)
    await conn.set_read_only(True)
    return conn


def _libpq_url(dsn: str) -> str:
    """mula's URL is SQLAlchemy's (``postgresql+psycopg2://``); libpq wants no driver."""
    return re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", dsn)


async def _check_revision(mula: AsyncConnection) -> None:
    try:
        rows = await (await mula.execute(Q["mula_revision"])).fetchall()
    except psycopg.errors.UndefinedTable:
        raise UnknownMulaSchema("no alembic_version table: this is not a mula database") from None
    finally:
        await mula.rollback()
    revisions = sorted(version for (version,) in rows)
    if revisions != [MULA_REVISION]:
        found = ", ".join(revisions) or "none"
        raise UnknownMulaSchema(
            f"mula schema at alembic revision {found}; this import knows mula v1.20's ({MULA_REVISION}) only: "
            "move to mula v1.20.x first (its migrations), then import"
        )


async def _copy_schedules(mula: AsyncConnection, pool: AsyncConnectionPool, result: MulaImport) -> None:
    cursor = mula.cursor(name="mula_schedules")
    await cursor.execute(Q["mula_schedules"])
    while rows := await cursor.fetchmany(BATCH_ROWS):
        batch = []
        for id_, scheduler_id, organisation, hash_, data, enabled, cron, deadline, created, modified in rows:
            data = normalised(msgspec.json.decode(data))
            hash_ = hash_ or _hash_of(scheduler_id, data)
            if hash_ is None:
                result.schedules_skipped += 1
                continue
            batch.append({
                "id": id_, "scheduler_id": scheduler_id, "organisation": organisation, "hash": hash_,
                "data": data, "enabled": enabled, "schedule": cron, "deadline_at": deadline,
                "created_at": created, "modified_at": modified,
            })  # fmt: skip
        inserted = await _insert(pool, "insert_schedules", batch)
        result.schedules += len(inserted)
        result.schedules_present += len(batch) - len(inserted)


async def _copy_tasks(
    mula: AsyncConnection, pool: AsyncConnectionPool, result: MulaImport, live: dict[str, set[str]]
) -> None:
    cursor = mula.cursor(name="mula_tasks")
    await cursor.execute(Q["mula_tasks"])
    while rows := await cursor.fetchmany(BATCH_ROWS):
        batch = []
        for id_, scheduler_id, schedule_id, schedule_hash, org, priority, status, type_, hash_, data, created, modified in rows:
            status = status.lower()
            if status in LIVE:
                live.setdefault(scheduler_id, set()).add(str(id_))
            batch.append({
                "id": id_, "scheduler_id": scheduler_id, "schedule_id": schedule_id, "schedule_hash": schedule_hash,
                "organisation": org, "priority": priority or 0, "status": status, "type": type_, "hash": hash_,
                "data": normalised(msgspec.json.decode(data)), "created_at": created, "modified_at": modified,
            })  # fmt: skip
        inserted = await _insert(pool, "insert_tasks", batch)
        result.tasks.update(status for (status,) in inserted)
        result.tasks_present += len(batch) - len(inserted)


async def _insert(pool: AsyncConnectionPool, query: str, batch: list[dict[str, Any]]) -> list[tuple]:
    if not batch:
        return []
    async with pool.connection() as conn:
        return await (await conn.execute(Q[query], [_encode(batch).decode()])).fetchall()


async def _restore_live(
    queues: TaskQueues, tasks: TaskStore, scheduler_id: str, mula_ids: set[str], result: MulaImport
) -> None:
    """Put mula's live tasks into Redis as redisched's history now has them (a task that
    finished here since an earlier run is no longer live and stays out)."""
    if not mula_ids:
        return
    found = [live for live in await tasks.live(scheduler_id) if str(live.task.id) in mula_ids]
    for start in range(0, len(found), RESTORE_BATCH):
        batch = found[start : start + RESTORE_BATCH]
        records = [record_from_task(live.task, tries=live.tries, rev=live.rev) for live in batch]
        for live, restored in zip(batch, await queues.restore_all(records)):
            if not restored:
                result.live_present += 1
            elif live.task.status.value == "queued":
                result.queued += 1
            else:
                result.leased += 1


def _hash_of(scheduler_id: str, data: Any) -> str | None:
    try:
        return payload_hash(scheduler_id, data) if scheduler_id in SCHEDULERS else None
    except MalformedPayload:
        return None


def normalised(value: Any) -> Any:
    """``value`` with every datetime string in ISO 8601 with an offset (UTC when it had none);
    everything else as it was."""
    if isinstance(value, dict):
        return {key: normalised(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalised(item) for item in value]
    if isinstance(value, str) and (match := _DATETIME.fullmatch(value)):
        if match.group(1) is not None and value[10] == "T":
            return value  # already what redisched writes
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return _encode(moment).decode()[1:-1]
    return value
