"""Long-poll pop (``POST /schedulers/{id}/pop?wait=<seconds>``): instead of the runners' 10 s
sleep loop, an empty pop waits up to ``wait`` seconds for work.

The wake-up is the queue's own event stream (each partition's): every push (and every other change) appends to
it, whichever process or client made it. A waiter notes the stream's newest entry, retries
the pop, and if that is still empty blocks on ``XREAD`` for an entry after the one it noted, so
a push landing between the pop and the wait is never missed. No pub/sub, no state in the API
process: any number of processes wait side by side, each waiter on its own short block.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis, RedisCluster

from redisched import filters
from redisched.queue.queue import TaskQueues
from redisched.queue.records import TaskRecord

MAX_WAIT_SECONDS = 30.0
BLOCK_SLICE_SECONDS = 1.0  # one XREAD blocks at most this long (below any socket timeout)


async def pop_or_wait(
    queues: TaskQueues,
    scheduler_id: str,
    node: filters.Node | None,
    limit: int | None,
    wait: float,
    client_gone: Callable[[], Awaitable[bool]],
) -> list[TaskRecord]:
    """Pop; when nothing matches, retry on each change of the queue until ``wait`` seconds
    (at most ``MAX_WAIT_SECONDS``) have passed or the client has gone."""
    records = await queues.pop(scheduler_id, node, limit)
    if records or wait <= 0:
        return records
    streams = [keys.events for keys in queues.layout.of(queues.commands.scheduler(scheduler_id).id)]
    # On a cluster one XREAD cannot span partitions' slots: watch one partition per slice.
    one_at_a_time = isinstance(queues.redis, RedisCluster) and len(streams) > 1
    deadline = time.monotonic() + min(wait, MAX_WAIT_SECONDS)
    turns = itertools.cycle([[stream] for stream in streams] if one_at_a_time else [streams])
    while (remaining := deadline - time.monotonic()) > 0 and not await client_gone():
        seen = await _newest_events(queues.redis, next(turns))
        if records := await queues.pop(scheduler_id, node, limit):
            return records
        await _event_after(queues.redis, seen, min(remaining, BLOCK_SLICE_SECONDS))
    return []


async def _newest_events(redis: Redis | RedisCluster, streams: list[str]) -> dict[str, bytes | str]:
    """Each stream's newest entry id ("0-0" for an empty one)."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xrevrange(stream, count=1)
        newest = await pipe.execute()
    return {stream: entries[0][0] if entries else "0-0" for stream, entries in zip(streams, newest)}


async def _event_after(redis: Redis | RedisCluster, seen: dict[str, bytes | str], seconds: float) -> None:
    await redis.xread(seen, count=1, block=max(1, int(seconds * 1000)))
