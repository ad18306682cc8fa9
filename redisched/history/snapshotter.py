"""The snapshotter: each queue's event stream, written behind into Postgres.

Per queue (per partition of a partitioned queue: each has its own stream), a consumer group
reads ``<p>:{<q>}:events`` in batches. A batch is applied in Postgres transactions (one, unless
its data is large: schedules created or linked by pushes, then the tasks, highest rev
winning), then the finished tasks are dropped from Redis, then the entries are acked, the
queue's applied position (``meta`` field ``applied``) moves and the stream is trimmed behind
it. Forgetting before acking means a crash anywhere replays the batch, which is harmless: the
upserts are rev-guarded and forgetting checks the rev. On start a consumer first replays its
own pending entries; entries of a consumer that vanished are claimed after ``claim_idle_ms``.

While Postgres is away (or fails for any reason of its own) a transaction is retried until it
passes. What Postgres refuses for the rows' own sake (by SQLSTATE class) is narrowed down to
the task, which is quarantined (history/quarantine.py); the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple

import msgspec
import psycopg
import redis.asyncio as aredis
from redis.exceptions import ResponseError

from redisched.cancellation import stop_if_cancelled
from redisched.history.quarantine import HELD, PoisonEvent, held_tasks, quarantine
from redisched.history.schedules import ScheduleStore
from redisched.history.tasks import Event, TaskStore, latest_records
from redisched.models import FINISHED, utcnow
from redisched.queue import plans
from redisched.queue.commands import QueueCommands
from redisched.queue.driver import AsyncDriver
from redisched.queue.keys import QueueKeys
from redisched.queue.layout import QueueLayout
from redisched.queue.records import decode_record

log = logging.getLogger(__name__)

QUEUES = ("boefje", "normalizer", "report")
GROUP = "snapshotter"
# SQLSTATE classes (its first two characters) of what Postgres refuses for the row's own
# sake: cardinality (21), data exceptions (22: a NUL, a number or time out of range, bad
# input), integrity (23: a key twice, a check) and program limits (54: an index entry too
# large). Those events are quarantined. Anything else is Postgres' state, not the row's:
# connection (08), rollback (40), resources (53), operator intervention (57), a missing
# table or right (42)... and is retried until it passes.
POISON_CLASSES = frozenset({"21", "22", "23", "54"})
SOLO_RETRY_DELAY = 0.05  # a task refused alone for an integrity error is tried again after this

# TaskQueues.forget_finished: (queue, [(task id, rev)], partition) -> how many left Redis.
Forget = Callable[[str, list[tuple[str, str]]], Awaitable[Any]]


def stream_id(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id as a comparable (ms, seq)."""
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def refused_for_its_own_sake(exc: psycopg.Error) -> bool:
    """Whether Postgres (or psycopg, for a value it cannot send) refused the rows themselves,
    so that trying them again cannot help; by SQLSTATE class, see POISON_CLASSES."""
    if exc.sqlstate is None:  # raised in psycopg, not by the server
        return isinstance(exc, psycopg.DataError)
    return exc.sqlstate[:2] in POISON_CLASSES


# A script's rev is max(last rev + 1, Redis' clock in µs) and its stream entry id is Redis'
# clock in ms (never behind the last one): a rev far ahead of its entry's time was not handed
# out by a script. Such an event (XADD by a raw writer) would otherwise win over every later
# version of its task in Postgres.
REV_LEAD_LIMIT_MS = 60_000


def rev_is_plausible(rev: str, entry_id: bytes | str) -> bool:
    try:
        return int(rev) <= (stream_id(entry_id)[0] + REV_LEAD_LIMIT_MS) * 1000
    except ValueError:
        return False


class Entry(NamedTuple):
    """A stream entry and its event."""

    id: str
    fields: dict[str, Any]
    event: Event

    @property
    def size(self) -> int:
        return sum(len(value) for value in self.fields.values() if isinstance(value, (bytes, str)))


def decode_entries(entries: Iterable[tuple[Any, dict | None]]) -> tuple[list[Entry], list[PoisonEvent]]:
    """The events of stream entries, and the entries that are none (to quarantine)."""
    decoded, unreadable = [], []
    for entry_id, raw in entries:
        fields = {_text(k): v for k, v in (raw or {}).items()}
        try:
            record = decode_record(fields["rec"], fields.get("data"))
            event = Event(_text(fields["op"]), record, _text(fields.get("sched")))
            # what no task can be (a status, an id, a time written by hand) would make a row
            # that every read of it fails on, or one Postgres refuses: the API's own conversion
            msgspec.structs.replace(record, data="null").to_task()
        except (KeyError, ValueError, TypeError, OverflowError, UnicodeDecodeError) as exc:  # DecodeError: a ValueError
            unreadable.append(PoisonEvent(_text(entry_id), fields, None, f"unreadable event: {exc!r}"))
            continue
        if not rev_is_plausible(record.rev, entry_id):
            reason = f"forged event: rev {record.rev} runs ahead of its stream entry {_text(entry_id)}"
            unreadable.append(PoisonEvent(_text(entry_id), fields, None, reason))  # holds no task back
        else:
            decoded.append(Entry(_text(entry_id), fields, event))
    return decoded, unreadable


def decode_events(entries: Iterable[tuple[Any, dict | None]]) -> list[Event]:
    """The events of stream entries; unreadable ones left out."""
    return [entry.event for entry in decode_entries(entries)[0]]


class Batch(NamedTuple):
    """Stream entries read in one round trip with a look at the quarantine: only when it holds
    tasks back are the batch's tasks looked up in it (a second round trip)."""

    entries: list
    holds: bool  # whether any task of the queue (partition) is held in quarantine


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
        layout: QueueLayout,
        forget: Forget | None = None,
        queues: Iterable[str] = QUEUES,
        consumer: str | None = None,
        batch_size: int = 500,
        batch_bytes: int = 8 << 20,
        block_ms: int = 1000,
        claim_idle_ms: int = 60_000,
        pg_timeout: float = 5.0,
    ) -> None:
        self.redis = redis
        self.tasks = tasks
        self.schedules = schedules
        self.forget = forget
        self.queues = tuple(queues)
        self.layout = layout
        self.consumer = consumer or socket.gethostname()
        self.batch_size = batch_size
        # A transaction carries at most this much of the events' JSON (one event more if it
        # alone is larger), and reads shrink to about this much, so large data never makes
        # a statement or a reply of hundreds of MiB.
        self.batch_bytes = batch_bytes
        self._read_count: dict[str, int] = {}  # partition tag -> entries per read
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.pg_timeout = pg_timeout
        # queue partition tag -> seconds between its newest applied event being written and
        # its commit.
        self.lag: dict[str, float] = {}
        self._commands = QueueCommands(self.layout)
        self._driver = AsyncDriver(redis)
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
                stop_if_cancelled(exc)
                if trouble.since is None:
                    delays = _backoff()
                trouble.failed(exc)
                await asyncio.sleep(next(delays))

    async def _follow(self, keys: QueueKeys, trouble: Outage) -> None:
        await self._create_group(keys)
        while (batch := await self._read(keys, "0")).entries:  # what this consumer read and did not ack
            await self._apply(keys, batch)
            stop_if_cancelled()
        trouble.over()
        next_claim = 0.0
        while True:
            stop_if_cancelled()
            if time.monotonic() >= next_claim:
                next_claim = time.monotonic() + self.claim_idle_ms / 2000
                if (batch := await self._claim_abandoned(keys)).entries:
                    await self._apply(keys, batch)
                    if len(batch.entries) == self.batch_size:  # more may be waiting: claim again
                        next_claim = 0.0
                    continue
            if (batch := await self._read(keys, ">")).entries:
                await self._apply(keys, batch)

    async def _create_group(self, keys: QueueKeys) -> None:
        try:
            await self.redis.xgroup_create(keys.events, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read(self, keys: QueueKeys, start: str) -> Batch:
        """New entries (``start`` ">", waiting up to ``block_ms`` for them) or this consumer's
        unacked ones ("0")."""
        block = self.block_ms if start == ">" else None
        count = self._read_count.get(keys.tag, self.batch_size)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xreadgroup(GROUP, self.consumer, {keys.events: start}, count=count, block=block)
            pipe.scard(keys.dead_tasks)
            reply, held = await pipe.execute()
        return Batch(reply[0][1] if reply else [], held > 0)

    async def _claim_abandoned(self, keys: QueueKeys) -> Batch:
        """Entries another consumer read and left unacked for ``claim_idle_ms``."""
        count = self._read_count.get(keys.tag, self.batch_size)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xautoclaim(keys.events, GROUP, self.consumer, self.claim_idle_ms, start_id="0-0", count=count)
            pipe.scard(keys.dead_tasks)
            reply, held = await pipe.execute()
        return Batch([entry for entry in reply[1] if entry[1] is not None], held > 0)

    async def _apply(self, keys: QueueKeys, batch: Batch) -> None:
        entries = batch.entries
        decoded, poisoned = decode_entries(entries)
        held = await held_tasks(self.redis, keys, {entry.event.record.id for entry in decoded}) if batch.holds else set()
        if held:
            poisoned += [PoisonEvent(e.id, e.fields, e.event.record.id, HELD) for e in decoded if e.event.record.id in held]
            decoded = [entry for entry in decoded if entry.event.record.id not in held]
        poisoned += await self._store(decoded)
        if poisoned:
            await quarantine(self.redis, keys, poisoned)
            for poison in poisoned:
                log.error("quarantined event %s of task %s (%s): %s", poison.entry, poison.task_id, keys.tag, poison.reason)
        aside = {poison.entry for poison in poisoned}
        stored = [entry.event for entry in decoded if entry.id not in aside]
        # A finished task whose event was quarantined stays in Redis: it is readable there
        # until a retry brings it to Postgres.
        finished = [(r.id, r.rev) for r in latest_records(stored) if r.status in FINISHED]
        if finished and self.forget is not None:
            await self.forget(keys.queue_id, finished, keys.partition)
        entry_ids = [_text(entry_id) for entry_id, _ in entries]
        await self._driver.run(plans.ack_events(self._commands, keys, GROUP, entry_ids))
        self.lag[keys.tag] = max(0.0, time.time() - stream_id(entry_ids[-1])[0] / 1000)
        per_entry = max(1, sum(entry.size for entry in decoded) // max(1, len(decoded)))
        self._read_count[keys.tag] = max(1, min(self.batch_size, self.batch_bytes // per_entry))

    async def _store(self, entries: list[Entry]) -> list[PoisonEvent]:
        """Commit the events, in transactions of at most ``batch_bytes``; returns those
        Postgres refused for their own sake. A task's events of the batch stay together (the
        history takes the newest of them, with the newest data among them)."""
        by_task: dict[str, list[Entry]] = {}
        for entry in entries:
            by_task.setdefault(entry.event.record.id, []).append(entry)
        poisoned: list[PoisonEvent] = []
        chunk: list[list[Entry]] = []
        size = 0
        for group in by_task.values():
            group_size = sum(entry.size for entry in group)
            if chunk and size + group_size > self.batch_bytes:
                poisoned += await self._store_tasks(chunk)
                chunk, size = [], 0
            chunk.append(group)
            size += group_size
        if chunk:
            poisoned += await self._store_tasks(chunk)
        return poisoned

    async def _store_tasks(self, groups: list[list[Entry]]) -> list[PoisonEvent]:
        """Commit the events of these tasks. When Postgres refuses the rows, halves are
        committed apart until the refused task is alone; refused alone (for an integrity
        error: twice, a moment apart), its events are returned to be quarantined. A bad row
        costs O(log n) transactions and never holds up the others."""
        try:
            await self._commit([entry.event for group in groups for entry in group])
            return []
        except psycopg.Error as exc:
            if len(groups) > 1:
                half = len(groups) // 2
                return await self._store_tasks(groups[:half]) + await self._store_tasks(groups[half:])
            refusal = exc
        if refusal.sqlstate and refusal.sqlstate.startswith("23"):  # a key another writer just took
            await asyncio.sleep(SOLO_RETRY_DELAY)
            try:
                await self._commit([entry.event for entry in groups[0]])
                return []
            except psycopg.Error as exc:
                refusal = exc
        reason = f"Postgres refused it: {type(refusal).__name__} (SQLSTATE {refusal.sqlstate}): {refusal}".strip()
        return [PoisonEvent(entry.id, entry.fields, entry.event.record.id, reason) for entry in groups[0]]

    async def _commit(self, events: list[Event]) -> None:
        """One transaction, retried while Postgres fails for reasons of its own; raises what
        it refuses for the rows' own sake (``refused_for_its_own_sake``)."""
        if not events:
            return
        for delay in _backoff():
            try:
                async with self.tasks.pool.connection(timeout=self.pg_timeout) as conn, conn.transaction():
                    await conn.execute("SET LOCAL statement_timeout = 0")  # the API's limit is not the history's
                    await self.schedules.apply_pushes(conn, events, utcnow())
                    await self.tasks.apply(events, conn)
            except psycopg.Error as exc:
                if refused_for_its_own_sake(exc):
                    raise
                stop_if_cancelled(exc)
                self._postgres.failed(exc)
                await asyncio.sleep(delay)
            else:
                self._postgres.over()
                return


CATCH_UP_POLL_SECONDS = 0.005


class _Waiter:
    """One wait_caught_up call: the streams (events key -> meta key) it still waits on, each
    with the position to reach once known, and its deadline."""

    def __init__(self, streams: list[QueueKeys], deadline: float) -> None:
        self.unknown = {keys.events: keys.meta for keys in streams}  # target not read yet
        self.targets: dict[str, tuple[int, int]] = {}  # meta key -> the position to reach
        self.deadline = deadline
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()


class _CatchUpWatch:
    """Every wait_caught_up on one Redis client shares one poll per round: one pipeline
    reading the newest entry of the streams new waiters named and the applied position of
    every stream waited on, however many wait. Each call polling on its own made the Redis
    calls grow with the readers in flight (a listener's 100 prefetched messages each ask the
    history): they crowded the event loop the snapshotter shares in the worker, so it fell
    further behind and yet more readers waited."""

    def __init__(self, redis: aredis.Redis) -> None:
        self.redis = redis
        self.loop = asyncio.get_running_loop()
        self.waiters: list[_Waiter] = []
        self.rounds = 0  # for tests: the poll's pipelines so far
        self._poller: asyncio.Task | None = None

    async def wait(self, streams: list[QueueKeys], timeout: float) -> bool:
        waiter = _Waiter(streams, time.monotonic() + timeout)
        self.waiters.append(waiter)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="wait_caught_up poll")
        try:
            return await waiter.done
        finally:
            if waiter in self.waiters:  # its caller was cancelled
                self.waiters.remove(waiter)

    async def _poll(self) -> None:
        while self.waiters:
            waiters = list(self.waiters)
            try:
                await self._round(waiters)
            except Exception as exc:  # Redis away: every waiter of the round hears it
                for waiter in waiters:
                    self._finish(waiter, exc)
            if self.waiters:
                await asyncio.sleep(CATCH_UP_POLL_SECONDS)

    async def _round(self, waiters: list[_Waiter]) -> None:
        # Targets are read in a round that starts after the waiter came: at or past the
        # newest entry written before its call.
        unknown = sorted({events for waiter in waiters for events in waiter.unknown})
        metas = sorted({meta for waiter in waiters for meta in (*waiter.unknown.values(), *waiter.targets)})
        async with self.redis.pipeline(transaction=False) as pipe:
            for events in unknown:
                pipe.xrevrange(events, count=1)
            for meta in metas:
                pipe.hget(meta, "applied")
            replies = await pipe.execute()
        self.rounds += 1
        newest = {events: stream_id(entries[0][0]) for events, entries in zip(unknown, replies) if entries}
        applied = {meta: stream_id(position) for meta, position in zip(metas, replies[len(unknown):]) if position is not None}
        now = time.monotonic()
        for waiter in waiters:
            for events, meta in waiter.unknown.items():
                if events in newest:  # an empty stream has nothing to wait for
                    waiter.targets[meta] = newest[events]
            waiter.unknown = {}
            waiter.targets = {meta: target for meta, target in waiter.targets.items() if applied.get(meta, (-1, -1)) < target}
            if not waiter.targets:
                self._finish(waiter, True)
            elif now >= waiter.deadline:
                self._finish(waiter, False)

    def _finish(self, waiter: _Waiter, outcome: bool | Exception) -> None:
        if waiter in self.waiters:
            self.waiters.remove(waiter)
        if waiter.done.done():
            return
        if isinstance(outcome, Exception):
            waiter.done.set_exception(outcome)
        else:
            waiter.done.set_result(outcome)


_watches: weakref.WeakKeyDictionary[aredis.Redis, _CatchUpWatch] = weakref.WeakKeyDictionary()


def catch_up_watch(redis: aredis.Redis) -> _CatchUpWatch:
    """The shared poll of this Redis client (on the running loop)."""
    watch = _watches.get(redis)
    if watch is None or watch.loop is not asyncio.get_running_loop():
        watch = _watches[redis] = _CatchUpWatch(redis)
    return watch


async def wait_caught_up(
    redis: aredis.Redis,
    layout: QueueLayout,
    queues: Iterable[str] = QUEUES,
    timeout: float = 1.0,
) -> bool:
    """Wait until Postgres holds every event written to the queues' streams before this call
    (at most ``timeout`` seconds, after at least one look); False when it does not in time.
    Concurrent calls on one Redis client share their Redis calls (``_CatchUpWatch``)."""
    return await catch_up_watch(redis).wait(layout.every(tuple(queues)), timeout)


async def backlog_seconds(
    redis: aredis.Redis, layout: QueueLayout, queues: Iterable[str] = QUEUES
) -> dict[str, float]:
    """Per queue, how long the oldest event Postgres does not hold yet has waited (0 when
    caught up; the worst partition's): a queue whose history is stuck shows it growing. For
    /metrics: any process can answer it. Ages are against this host's clock (stream ids are
    the Redis host's milliseconds)."""
    streams = layout.every(tuple(queues))
    async with redis.pipeline(transaction=False) as pipe:
        for keys in streams:
            pipe.hget(keys.meta, "applied")
        applied = await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:
        for keys, position in zip(streams, applied):
            pipe.xrange(keys.events, min=f"({_text(position)}" if position is not None else "-", count=1)
        oldest = await pipe.execute()
    now_ms = time.time() * 1000
    backlog: dict[str, float] = {}
    for keys, waiting in zip(streams, oldest):
        behind = max(0.0, (now_ms - stream_id(waiting[0][0])[0]) / 1000) if waiting else 0.0
        backlog[keys.queue_id] = max(behind, backlog.get(keys.queue_id, 0.0))
    return backlog
