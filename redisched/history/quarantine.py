"""Quarantined events: what Postgres refused for the event's own sake, kept aside so the rest
of the queue's history goes on.

The snapshotter moves such an event (or an entry it cannot read) to the queue's dead-letter
stream (``QueueKeys.dead_events``): the entry's own fields plus ``entry`` (its id in the event
stream), ``task`` and ``reason``. The task is then held (``QueueKeys.dead_tasks``): its later
events join the first in quarantine, so Postgres never gets a later version of a task without
the earlier one (a pop without the push that carried the data). Retrying a dead letter puts
every dead letter of its task back on the event stream, in order, and releases the task; the
snapshotter applies them like any other event (rev-guarded). A crash between moving an event
and acking it may store it twice; listing shows each ``entry`` once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec
import redis.asyncio as aredis

from redisched.queue.keys import QueueKeys
from redisched.queue.layout import QueueLayout

EVENT_FIELDS = ("op", "rec", "data", "sched")  # what a retry puts back on the event stream
LIST_MAX = 1000  # dead letters one listing returns per queue partition
_STREAM_ID = re.compile(r"^\d+-\d+$")


class Quarantined(msgspec.Struct, kw_only=True):
    """A dead letter as the admin route and the CLI show it (``rec``/``data`` left out)."""

    id: str  # "<scheduler_id>:<partition>:<dead-letter stream id>": what retry takes
    scheduler_id: str
    task_id: str | None
    op: str | None
    reason: str
    entry: str  # the event's id in the queue's event stream
    quarantined_at_ms: int


class PoisonEvent(msgspec.Struct, frozen=True):
    """An event to quarantine: its stream entry and why."""

    entry: str
    fields: dict[str, Any]
    task_id: str | None
    reason: str


HELD = "an earlier event of this task is quarantined"


async def quarantine(redis: aredis.Redis, keys: QueueKeys, poisoned: list[PoisonEvent]) -> None:
    """Move the events to the dead-letter stream and hold their tasks."""
    async with redis.pipeline(transaction=False) as pipe:
        for poison in poisoned:
            kept = {name: value for name, value in poison.fields.items() if name in EVENT_FIELDS}
            pipe.xadd(keys.dead_events, {**kept, "entry": poison.entry, "task": poison.task_id or "", "reason": poison.reason[:2000]})
        if held := {poison.task_id for poison in poisoned if poison.task_id}:
            pipe.sadd(keys.dead_tasks, *held)
        await pipe.execute()


async def held_tasks(redis: aredis.Redis, keys: QueueKeys, task_ids: Iterable[str]) -> set[str]:
    """Which of these tasks have events in quarantine."""
    task_ids = list(task_ids)
    if not task_ids:
        return set()
    held = await redis.smismember(keys.dead_tasks, task_ids)
    return {task_id for task_id, is_held in zip(task_ids, held) if is_held}


async def counts(redis: aredis.Redis, layout: QueueLayout) -> dict[str, int]:
    """Dead letters per queue (all partitions): the metric."""
    streams = layout.every()
    async with redis.pipeline(transaction=False) as pipe:
        for keys in streams:
            pipe.xlen(keys.dead_events)
        lengths = await pipe.execute()
    totals: dict[str, int] = {}
    for keys, length in zip(streams, lengths):
        totals[keys.queue_id] = totals.get(keys.queue_id, 0) + int(length)
    return totals


async def listing(
    redis: aredis.Redis, layout: QueueLayout, queue_ids: list[str] | None = None, limit: int = LIST_MAX
) -> list[Quarantined]:
    """The oldest ``limit`` dead letters of each queue partition, oldest first."""
    found: list[Quarantined] = []
    for keys in layout.every(queue_ids):
        seen: set[str] = set()
        for dead_id, fields in await redis.xrange(keys.dead_events, count=limit):
            letter = _letter(keys, _text(dead_id), {_text(k): _text(v) for k, v in fields.items()})
            if letter.entry not in seen:
                seen.add(letter.entry)
                found.append(letter)
    return found


async def retry(redis: aredis.Redis, layout: QueueLayout, ids: list[str] | None = None) -> int:
    """Put dead letters back on their event streams, with every other dead letter of their
    tasks (``ids`` as listed; None: all), and release their tasks; how many went back."""
    named: dict[str, set[str]] = {}  # partition tag -> dead-letter ids
    for keys, dead_id in _parse_ids(layout, ids or []):
        named.setdefault(keys.tag, set()).add(dead_id)
    retried = 0
    for keys in layout.every():
        if ids is not None and keys.tag not in named:
            continue
        newest = await redis.xrevrange(keys.dead_events, count=1)
        if not newest:
            continue
        last = newest[0][0]  # not past it: what fails again comes back after it
        if ids is None:
            tasks = None
            await redis.delete(keys.dead_tasks)
        else:
            tasks = {_task(fields) for dead_id in named[keys.tag] for _, fields in await redis.xrange(keys.dead_events, dead_id, dead_id)}
            tasks.discard(None)
            if tasks:  # released first: or the snapshotter would hold them again
                await redis.srem(keys.dead_tasks, *tasks)
        start = "-"
        while letters := await redis.xrange(keys.dead_events, min=start, max=last, count=LIST_MAX):
            start = f"({_text(letters[-1][0])}"
            if tasks is not None:
                letters = [(i, f) for i, f in letters if _text(i) in named[keys.tag] or _task(f) in tasks]
            retried += await _move_back(redis, keys, letters)
    return retried


async def _move_back(redis: aredis.Redis, keys: QueueKeys, letters: list) -> int:
    if not letters:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for dead_id, fields in letters:
            pipe.xadd(keys.events, {_text(k): v for k, v in fields.items() if _text(k) in EVENT_FIELDS})
            pipe.xdel(keys.dead_events, dead_id)
        await pipe.execute()
    return len(letters)


def _task(fields: dict) -> str | None:
    return _text(fields.get(b"task", fields.get("task"))) or None


def _parse_ids(layout: QueueLayout, ids: list[str]) -> list[tuple[QueueKeys, str]]:
    """(keys, dead-letter id) of each listed id; ids that name no queue partition are skipped."""
    found = []
    for letter_id in ids:
        queue_id, _, rest = letter_id.partition(":")
        partition, _, dead_id = rest.partition(":")
        if queue_id in layout.queue_ids and partition.isdigit() and int(partition) < layout.partitions and _STREAM_ID.match(dead_id):
            found.append((layout.of(queue_id)[int(partition)], dead_id))
    return found


def _letter(keys: QueueKeys, dead_id: str, fields: dict[str, str | None]) -> Quarantined:
    return Quarantined(
        id=_letter_id(keys, dead_id),
        scheduler_id=keys.queue_id,
        task_id=fields.get("task") or None,
        op=fields.get("op"),
        reason=fields.get("reason") or "",
        entry=fields.get("entry") or "",
        quarantined_at_ms=int(dead_id.partition("-")[0]),
    )


def _letter_id(keys: QueueKeys, dead_id: str) -> str:
    return f"{keys.queue_id}:{keys.partition}:{dead_id}"


def _text(value: bytes | str | None) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
