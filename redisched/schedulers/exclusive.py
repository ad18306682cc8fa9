"""One handling of a message at a time, across processes.

A broker that loses a connection redelivers the messages that were not acked, also those
whose handler is still running: two handlings of one event at once would both judge "no task
yet" and create two. The second one waits its turn instead, and then finds the first one's
task (the history waits for the snapshotter before judging)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from redisched.clients.amqp import Retryable
from redisched.queue.keys import handling_key

HOLD_MS = 300_000  # a handler that died holding it frees the message after this long
WAIT_SECONDS = 60.0  # then the listener's retry takes over
POLL_SECONDS = 0.02


class MessageLocks:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix

    @asynccontextmanager
    async def holding(self, body: bytes) -> AsyncIterator[None]:
        key = handling_key(self.prefix, hashlib.sha1(body).hexdigest())
        deadline = time.monotonic() + WAIT_SECONDS
        while not await self.redis.set(key, "1", nx=True, px=HOLD_MS):
            if time.monotonic() > deadline:
                raise Retryable("the same message is still being handled")
            await asyncio.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            await self.redis.delete(key)
