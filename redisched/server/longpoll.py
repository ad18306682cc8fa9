"""Long-poll pop (``POST /schedulers/{id}/pop?wait=<seconds>``): instead of the runners' 10 s
sleep loop, an empty pop waits up to ``wait`` seconds for work.

The wake-up is the queue's own event stream: every push (and every other change) appends to
it, whichever process or client made it. A waiter notes the stream's newest entry, retries
the pop, and if that is still empty blocks on ``XREAD`` for an entry after the one it noted, so
a push landing between the pop and the wait is never missed. No pub/sub, no state in the API
process: any number of processes wait side by side, each waiter on its own short block.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

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
    events = queues.commands.keys(scheduler_id).events
    deadline = time.monotonic() + min(wait, MAX_WAIT_SECONDS)
    while (remaining := deadline - time.monotonic()) > 0 and not await client_gone():
        seen = await _newest_event(queues.redis, events)
        if records := await queues.pop(scheduler_id, node, limit):
            return records
        await _event_after(queues.redis, events, seen, min(remaining, BLOCK_SLICE_SECONDS))
    return []


async def _newest_event(redis: Redis, stream: str) -> bytes | str:
    newest = await redis.xrevrange(stream, count=1)
    return newest[0][0] if newest else "0-0"


async def _event_after(redis: Redis, stream: str, seen: bytes | str, seconds: float) -> None:
    await redis.xread({stream: seen}, count=1, block=max(1, int(seconds * 1000)))
