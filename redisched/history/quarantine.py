"""Quarantined events: what Postgres refused for the event's own sake, kept aside so the rest
of the queue's history goes on.

The snapshotter moves such an event (or an entry it cannot read) to the queue's dead-letter
stream (``QueueKeys.dead_events``): the entry's own fields plus ``entry`` (its id in the event
stream), ``task`` and ``reason``. Retrying puts the fields back on the event stream, where the
snapshotter applies them like any other event (rev-guarded: a newer version of the task that
Postgres already holds wins), and drops the dead letter. A crash between moving an event and
acking it may store it twice; listing shows each ``entry`` once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec
import redis.asyncio as aredis

from redisched.queue.keys import QueueKeys, QueueLayout

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


async def quarantine(redis: aredis.Redis, keys: QueueKeys, poisoned: Iterable[PoisonEvent]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for poison in poisoned:
            kept = {name: value for name, value in poison.fields.items() if name in EVENT_FIELDS}
            pipe.xadd(keys.dead_events, {**kept, "entry": poison.entry, "task": poison.task_id or "", "reason": poison.reason[:2000]})
        await pipe.execute()


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
    """Put dead letters back on their event streams (``ids`` as listed; None: all); how many."""
    if ids is not None:
        return sum([await _move_back(redis, keys, await redis.xrange(keys.dead_events, dead_id, dead_id))
                    for keys, dead_id in _parse_ids(layout, ids)])  # fmt: skip
    retried = 0
    for keys in layout.every():
        newest = await redis.xrevrange(keys.dead_events, count=1)
        if not newest:
            continue
        last = newest[0][0]  # not past it: what fails again comes back after it
        while entries := await redis.xrange(keys.dead_events, max=last, count=LIST_MAX):
            retried += await _move_back(redis, keys, entries)
    return retried


async def _move_back(redis: aredis.Redis, keys: QueueKeys, entries: list) -> int:
    if not entries:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for dead_id, fields in entries:
            pipe.xadd(keys.events, {_text(k): v for k, v in fields.items() if _text(k) in EVENT_FIELDS})
            pipe.xdel(keys.dead_events, dead_id)
        await pipe.execute()
    return len(entries)


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
