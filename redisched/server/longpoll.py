"""Long-poll pop (``POST /schedulers/{id}/pop?wait=<seconds>``): instead of the runners' 10 s
sleep loop, an empty pop waits up to ``wait`` seconds for work.

The wake-up is the queue's own event stream (each partition's): every push (and every other change) appends to
it, whichever process or client made it. A waiter notes the stream's newest entry, retries
the pop, and if that is still empty blocks on ``XREAD`` for an entry after the one it noted, so
a push landing between the pop and the wait is never missed. No pub/sub, no state in the API
process: any number of processes wait side by side, each waiter on its own short block.

On shutdown the HTTP server sets the ``stopping`` event (connections.py): every waiter answers
at once with what it has (nothing), so the process can stop without waiting out the polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from redis.asyncio import Redis, RedisCluster

from redisched import filters
from redisched.queue.queue import TaskQueues
from redisched.queue.records import TaskRecord

MAX_WAIT_SECONDS = 30.0
BLOCK_SLICE_SECONDS = 1.0  # one XREAD blocks at most this long (below any socket timeout)
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
) -> list[TaskRecord]:
    """Pop; when nothing matches, retry on each change of the queue until ``wait`` seconds
    (at most ``MAX_WAIT_SECONDS``) have passed, the client has gone or ``stopping`` is set."""
    records = await queues.pop(scheduler_id, node, limit)
    if records or wait <= 0:
        return records
    streams = [keys.events for keys in queues.layout.of(queues.commands.scheduler(scheduler_id).id)]
    # On a cluster one XREAD cannot span partitions' slots: watch one partition per slice.
    one_at_a_time = isinstance(queues.redis, RedisCluster) and len(streams) > 1
    deadline = time.monotonic() + min(wait, MAX_WAIT_SECONDS)
    turns = itertools.cycle([[stream] for stream in streams] if one_at_a_time else [streams])
    stopping = stopping or asyncio.Event()
    while (remaining := deadline - time.monotonic()) > 0 and not stopping.is_set() and not await client_gone():
        seen = await _newest_events(queues.redis, next(turns))
        if records := await queues.pop(scheduler_id, node, limit):
            return records
        await _event_after(queues.redis, seen, min(remaining, BLOCK_SLICE_SECONDS), stopping)
    return []


async def _newest_events(redis: Redis | RedisCluster, streams: list[str]) -> dict[str, bytes | str]:
    """Each stream's newest entry id ("0-0" for an empty one)."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xrevrange(stream, count=1)
        newest = await pipe.execute()
    return {stream: entries[0][0] if entries else "0-0" for stream, entries in zip(streams, newest)}


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
