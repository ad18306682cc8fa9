"""Long-poll pop (``POST /schedulers/{id}/pop?wait=<seconds>``): instead of the runners' 10 s
sleep loop, an empty pop waits up to ``wait`` seconds for work.

The wake-up is the queue's own event stream (each partition's): every push (and every other change) appends to
it, whichever process or client made it. A waiter notes the stream's newest entry, retries
the pop, and if that is still empty blocks on ``XREAD`` for an entry after the one it noted, so
a push landing between the pop and the wait is never missed. No pub/sub, no state in the API
process: any number of processes wait side by side, each waiter on its own short block.

A task of a limited group (REDISCHED_LIMITS) may become eligible with no change at all: its
group reopens when a cooldown ends. So a waiter also reads when the queue's next group
reopens (each partition's ``limwake`` head, on Redis's clock) and blocks no longer than
that: it pops again as the group reopens, not at the end of its slice. A group reopened by
a freed slot needs nothing more: the finish that frees it is an event.

On shutdown the HTTP server sets the ``stopping`` event (connections.py): every waiter answers
at once with what it has (nothing), so the process can stop without waiting out the polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from redis.asyncio import Redis, RedisCluster

from redisched import filters
from redisched.queue.queue import TaskQueues
from redisched.queue.records import TaskRecord

MAX_WAIT_SECONDS = 30.0
BLOCK_SLICE_SECONDS = 1.0  # one XREAD blocks at most this long (below any socket timeout)
REOPEN_MARGIN_SECONDS = 0.002  # past a group's reopening time: the pop then finds it open
MIN_BLOCK_SECONDS = 0.005  # a group due but not yet reopened (a pop reopens 100 at most) is retried this soon
STOPPING = "redisched.stopping"  # the key of the shutdown event in the server's lifespan state


def stopping_event(state: MutableMapping[str, Any]) -> asyncio.Event:
    """The event set when the server starts shutting down, kept in the lifespan state (which
    each request's ``scope["state"]`` is a copy of), made on first use."""
    event = state.get(STOPPING)
    if event is None:
        event = state[STOPPING] = asyncio.Event()
    return event


def server_stopping(scope: Any) -> asyncio.Event | None:
    """The shutdown event a request can see (None when the server keeps none)."""
    return scope.get("state", {}).get(STOPPING)


async def pop_or_wait(
    queues: TaskQueues,
    scheduler_id: str,
    node: filters.Node | None,
    limit: int | None,
    wait: float,
    client_gone: Callable[[], Awaitable[bool]],
    stopping: asyncio.Event | None = None,
    status: str = "dispatched",
) -> list[TaskRecord]:
    """Pop (the tasks handed out as ``status``); when nothing matches, retry on each change
    of the queue until ``wait`` seconds (at most ``MAX_WAIT_SECONDS``) have passed, the
    client has gone or ``stopping`` is set."""
    records = await queues.pop(scheduler_id, node, limit, status=status)
    if records or wait <= 0:
        return records
    partitions = queues.layout.of(queues.commands.scheduler(scheduler_id).id)
    streams = [keys.events for keys in partitions]
    reopenings = [keys.limwake for keys in partitions] if scheduler_id == "boefje" else []  # limits: boefjes only
    # On a cluster one XREAD cannot span partitions' slots: watch one partition per slice.
    one_at_a_time = isinstance(queues.redis, RedisCluster) and len(streams) > 1
    deadline = time.monotonic() + min(wait, MAX_WAIT_SECONDS)
    turns = itertools.cycle([[stream] for stream in streams] if one_at_a_time else [streams])
    stopping = stopping or asyncio.Event()
    while (remaining := deadline - time.monotonic()) > 0 and not stopping.is_set() and not await client_gone():
        seen, reopens_in = await _newest_events(queues.redis, next(turns), reopenings)
        if records := await queues.pop(scheduler_id, node, limit, status=status):
            return records
        await _event_after(queues.redis, seen, min(remaining, BLOCK_SLICE_SECONDS, reopens_in), stopping)
    return []


async def _newest_events(
    redis: Redis | RedisCluster, streams: list[str], reopenings: list[str]
) -> tuple[dict[str, bytes | str], float]:
    """Each stream's newest entry id ("0-0" for an empty one), and the seconds until the
    first limit group of ``reopenings`` (limwake keys) reopens (inf: none waits for a time)."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xrevrange(stream, count=1)
        for key in reopenings:
            pipe.zrange(key, 0, 0, withscores=True)
        if reopenings and not isinstance(redis, RedisCluster):
            pipe.time()
        replies = await pipe.execute()
    newest = {stream: entries[0][0] if entries else "0-0" for stream, entries in zip(streams, replies)}
    firsts = [score for head in replies[len(streams) : len(streams) + len(reopenings)] for _, score in head]
    if not firsts:
        return newest, math.inf
    if isinstance(redis, RedisCluster):  # a cluster pipeline refuses TIME: ask a shard holding one
        seconds, micros = await redis.execute_command("TIME", target_nodes=redis.get_node_from_key(reopenings[0]))
    else:
        seconds, micros = replies[-1]
    redis_now_ms = seconds * 1000 + micros / 1000
    return newest, max(MIN_BLOCK_SECONDS, (min(firsts) - redis_now_ms) / 1000 + REOPEN_MARGIN_SECONDS)


async def _event_after(
    redis: Redis | RedisCluster, seen: dict[str, bytes | str], seconds: float, stopping: asyncio.Event
) -> None:
    """Until a stream has an entry after ``seen``, ``seconds`` have passed or ``stopping`` is set."""
    read = asyncio.ensure_future(redis.xread(seen, count=1, block=max(1, int(seconds * 1000))))
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait((read, stop), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not read.done():
            read.cancel()  # redis-py drops the connection it was blocking on
            read.add_done_callback(_retrieve)
    if read.done() and not read.cancelled():
        read.result()  # a Redis error surfaces as before (a 503)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a cancelled read's outcome seen, whatever it was (no "never retrieved" warning)."""
    with contextlib.suppress(BaseException):
        task.result()
