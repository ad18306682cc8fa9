"""The snapshotter: each queue's event stream, written behind into Postgres.

Per queue (per partition of a partitioned queue: each has its own stream), a consumer group reads ``<p>:{<q>}:events`` in batches. A batch is applied in one
Postgres transaction (schedules created or linked by pushes, then the tasks, highest rev
winning), then the finished tasks are dropped from Redis, then the entries are acked, the
queue's applied position (``meta`` field ``applied``) moves and the stream is trimmed behind
it. Forgetting before acking means a crash anywhere replays the batch, which is harmless: the
upserts are rev-guarded and forgetting checks the rev. On start a consumer first replays its
own pending entries; entries of a consumer that vanished are claimed after ``claim_idle_ms``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec
import psycopg
import redis.asyncio as aredis
from redis.exceptions import ResponseError

from redisched.history.schedules import ScheduleStore
from redisched.history.tasks import Event, TaskStore, latest_records
from redisched.models import FINISHED, utcnow
from redisched.queue.commands import QueueCommands
from redisched.queue.keys import QueueKeys, QueueLayout
from redisched.queue.queue import run_script
from redisched.queue.records import decode_record

log = logging.getLogger(__name__)

QUEUES = ("boefje", "normalizer", "report")
GROUP = "snapshotter"
# Worth retrying: Postgres or Redis away, or a transaction that lost a lock race.
PG_TRANSIENT = (psycopg.OperationalError, psycopg.errors.TransactionRollback)

# TaskQueues.forget_finished: (queue, [(task id, rev)], partition) -> how many left Redis.
Forget = Callable[[str, list[tuple[str, str]]], Awaitable[Any]]


def stream_id(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id as a comparable (ms, seq)."""
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def decode_events(entries: Iterable[tuple[Any, dict | None]]) -> list[Event]:
    """The events of stream entries; an unreadable entry is logged and skipped."""
    events = []
    for entry_id, fields in entries:
        fields = {_text(k): v for k, v in (fields or {}).items()}
        try:
            record = decode_record(fields["rec"], fields.get("data"))
            events.append(Event(_text(fields["op"]), record, _text(fields.get("sched"))))
        except (KeyError, msgspec.DecodeError) as exc:
            log.error("skipping unreadable event %s: %r", _text(entry_id), exc)
    return events


class Outage:
    """Logs the first failure of an outage and its end, not every retry in between."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None

    def failed(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.warning("%s unavailable, retrying until it is back: %r", self.what, exc)

    def over(self) -> None:
        if self.since is not None:
            log.warning("%s back after %.1f s", self.what, time.monotonic() - self.since)
            self.since = None


def _being_cancelled() -> bool:
    """Whether this task was asked to stop. On Python 3.11 a cancellation that lands in a
    redis-py read under a socket timeout can come out as a TimeoutError; the request stays
    counted on the task, so a loop that retries on errors asks here before retrying."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _backoff(first: float = 0.05, most: float = 5.0):
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, most)


class Snapshotter:
    def __init__(
        self,
        redis: aredis.Redis,
        tasks: TaskStore,
        schedules: ScheduleStore,
        *,
        prefix: str,
        forget: Forget | None = None,
        queues: Iterable[str] = QUEUES,
        consumer: str | None = None,
        batch_size: int = 500,
        block_ms: int = 1000,
        claim_idle_ms: int = 60_000,
        pg_timeout: float = 5.0,
        partitions: int = 1,
    ) -> None:
        self.redis = redis
        self.tasks = tasks
        self.schedules = schedules
        self.prefix = prefix
        self.forget = forget
        self.queues = tuple(queues)
        self.layout = QueueLayout(prefix, partitions)
        self.consumer = consumer or socket.gethostname()
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.pg_timeout = pg_timeout
        # queue partition tag -> seconds between its newest applied event being written and
        # its commit.
        self.lag: dict[str, float] = {}
        self._commands = QueueCommands(prefix=prefix, partitions=partitions)
        self._postgres = Outage("Postgres")

    def lag_seconds(self) -> float:
        """The worst lag of the last batch of any queue."""
        return max(self.lag.values(), default=0.0)

    async def run(self) -> None:
        """Follow every queue until cancelled."""
        async with asyncio.TaskGroup() as group:
            for keys in self.layout.every(self.queues):
                group.create_task(self.run_partition(keys), name=f"snapshotter:{keys.tag}")

    async def run_partition(self, keys: QueueKeys) -> None:
        """Follow one queue (partition) until cancelled; any failure restarts it from its
        pending entries."""
        trouble = Outage(f"snapshotter of {keys.tag}")
        delays = _backoff()
        while True:
            try:
                await self._follow(keys, trouble)
            except Exception as exc:  # Redis away, or a bug: nothing is lost, entries stay pending
                if _being_cancelled():
                    raise asyncio.CancelledError from exc
                if trouble.since is None:
                    delays = _backoff()
                trouble.failed(exc)
                await asyncio.sleep(next(delays))

    async def _follow(self, keys: QueueKeys, trouble: Outage) -> None:
        await self._create_group(keys)
        while entries := await self._read(keys, "0"):  # what this consumer read and did not ack
            await self._apply(keys, entries)
        trouble.over()
        next_claim = 0.0
        while True:
            if time.monotonic() >= next_claim:
                next_claim = time.monotonic() + self.claim_idle_ms / 2000
                if entries := await self._claim_abandoned(keys):
                    await self._apply(keys, entries)
                    if len(entries) == self.batch_size:  # more may be waiting: claim again
                        next_claim = 0.0
                    continue
            if entries := await self._read(keys, ">"):
                await self._apply(keys, entries)

    async def _create_group(self, keys: QueueKeys) -> None:
        try:
            await self.redis.xgroup_create(keys.events, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read(self, keys: QueueKeys, start: str) -> list:
        block = self.block_ms if start == ">" else None
        reply = await self.redis.xreadgroup(
            GROUP, self.consumer, {keys.events: start}, count=self.batch_size, block=block
        )
        return reply[0][1] if reply else []

    async def _claim_abandoned(self, keys: QueueKeys) -> list:
        """Entries another consumer read and left unacked for ``claim_idle_ms``."""
        reply = await self.redis.xautoclaim(
            keys.events, GROUP, self.consumer, self.claim_idle_ms, start_id="0-0", count=self.batch_size
        )
        return [entry for entry in reply[1] if entry[1] is not None]

    async def _apply(self, keys: QueueKeys, entries: list) -> None:
        events = decode_events(entries)
        await self._store(events)
        finished = [(r.id, r.rev) for r in latest_records(events) if r.status in FINISHED]
        if finished and self.forget is not None:
            await self.forget(keys.queue_id, finished, keys.partition)
        entry_ids = [_text(entry_id) for entry_id, _ in entries]
        ack = self._commands.ack_events(keys.queue_id, GROUP, entry_ids, partition=keys.partition)
        await run_script(self.redis, ack)
        self.lag[keys.tag] = max(0.0, time.time() - stream_id(entry_ids[-1])[0] / 1000)

    async def _store(self, events: list[Event]) -> None:
        """Commit the events; a batch Postgres refuses is retried event by event, and an event
        it refuses on its own is logged and dropped (it must not block the queue)."""
        try:
            await self._commit(events)
        except psycopg.Error as exc:
            if len(events) == 1:
                log.error("dropping event %s of task %s: %r", events[0].op, events[0].record.id, exc)
                return
            for event in events:
                await self._store([event])

    async def _commit(self, events: list[Event]) -> None:
        """One transaction, retried while Postgres is unavailable."""
        if not events:
            return
        for delay in _backoff():
            try:
                async with self.tasks.pool.connection(timeout=self.pg_timeout) as conn, conn.transaction():
                    await self.schedules.apply_pushes(conn, events, utcnow())
                    await self.tasks.apply(events, conn)
            except PG_TRANSIENT as exc:
                self._postgres.failed(exc)
                await asyncio.sleep(delay)
            else:
                self._postgres.over()
                return


async def wait_caught_up(
    redis: aredis.Redis,
    prefix: str,
    queues: Iterable[str] = QUEUES,
    timeout: float = 1.0,
    poll: float = 0.005,
    *,
    partitions: int = 1,
) -> bool:
    """Wait until Postgres holds every event written to the queues' streams before this call
    (at most ``timeout`` seconds); False when it does not in time."""
    streams = QueueLayout(prefix, partitions).every(tuple(queues))
    async with redis.pipeline(transaction=False) as pipe:
        for keys in streams:
            pipe.xrevrange(keys.events, count=1)
        newest = await pipe.execute()
    waiting = {keys.meta: stream_id(entries[0][0]) for keys, entries in zip(streams, newest) if entries}
    deadline = time.monotonic() + timeout
    while waiting:
        async with redis.pipeline(transaction=False) as pipe:
            for meta in waiting:
                pipe.hget(meta, "applied")
            applied = await pipe.execute()
        waiting = {
            meta: target
            for (meta, target), position in zip(waiting.items(), applied)
            if position is None or stream_id(position) < target
        }
        if waiting and time.monotonic() >= deadline:
            return False
        if waiting:
            await asyncio.sleep(poll)
    return True


async def backlog_seconds(
    redis: aredis.Redis, prefix: str, queues: Iterable[str] = QUEUES, *, partitions: int = 1
) -> dict[str, float]:
    """Per queue, how far the history is behind: the age gap between the newest event and the
    last one applied (0 when caught up; the worst partition's). For /metrics: any process can
    answer it."""
    streams = QueueLayout(prefix, partitions).every(tuple(queues))
    async with redis.pipeline(transaction=False) as pipe:
        for keys in streams:
            pipe.xrevrange(keys.events, count=1)
            pipe.hget(keys.meta, "applied")
        replies = await pipe.execute()
    backlog = {}
    for keys, newest, applied in zip(streams, replies[0::2], replies[1::2]):
        behind = 0.0
        if newest and (applied is None or stream_id(applied) < stream_id(newest[0][0])):
            applied_ms = stream_id(applied)[0] if applied is not None else stream_id(newest[0][0])[0]
            behind = max(0.0, (stream_id(newest[0][0])[0] - applied_ms) / 1000)
        backlog[keys.queue_id] = max(behind, backlog.get(keys.queue_id, 0.0))
    return backlog
