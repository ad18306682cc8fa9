"""The direct client: trusted components push and pop straight on Redis, through the same
scripts as the API, without HTTP. Sync (``Client``) and asyncio (``AsyncClient``).

    from redisched.client import Client
    queue = Client.from_url("redis://127.0.0.1:6379/0").queue("boefje")
    task = queue.push(organisation="org1", priority=10, data={...})
    [popped] = queue.pop(filters={"filters": [...]}, limit=1)
    queue.patch(popped.id, {"status": "completed"}, token=popped.lease)
"""

from __future__ import annotations

import itertools
from typing import Any, TypeVar

import redis
from redis.exceptions import NoScriptError

from redisched import filters
from redisched.errors import NotFound
from redisched.queue.commands import QueueCommands, ScriptCall
from redisched.queue.queue import TaskQueues
from redisched.queue.records import TaskRecord

T = TypeVar("T")


def _node(request: dict[str, Any] | filters.Node | None) -> filters.Node | None:
    return filters.parse_filter_request(request) if isinstance(request, dict) else request


class Client:
    """Synchronous client on one Redis (or Redis Cluster) connection pool."""

    def __init__(self, redis_client: redis.Redis | redis.RedisCluster, commands: QueueCommands | None = None) -> None:
        self.redis = redis_client
        self.commands = commands or QueueCommands()

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "rs", **options: Any) -> Client:
        return cls(redis.Redis.from_url(url), QueueCommands(prefix=prefix, **options))

    def run(self, call: ScriptCall[T]) -> T:
        if call.script is None:
            return call.parse(None)
        keys, args = call.keys, call.args
        try:
            reply = self.redis.evalsha(call.script.sha, len(keys), *keys, *args)
        except NoScriptError:
            reply = self.redis.eval(call.script.source, len(keys), *keys, *args)
        return call.parse(reply)

    def queue(self, scheduler_id: str) -> SyncQueue:
        self.commands.scheduler(scheduler_id)
        return SyncQueue(self, scheduler_id)

    def close(self) -> None:
        self.redis.close()


class SyncQueue:
    """One queue; with partitions, a pop starts at a different partition each time, and a
    task's patch or lease extension looks in each partition until it finds the task."""

    def __init__(self, client: Client, scheduler_id: str) -> None:
        self._client, self._commands, self.id = client, client.commands, scheduler_id
        self._partitions = range(self._commands.partitions)
        self._next_start = itertools.count()

    def push(self, **task: Any) -> TaskRecord:
        return self._client.run(self._commands.push(self.id, **task))

    def pop(self, filters: dict[str, Any] | None = None, limit: int | None = 1) -> list[TaskRecord]:
        steps = self._commands.pop_steps(
            self.id, filters_node=_node(filters), limit=limit, start=next(self._next_start)
        )
        try:
            call = next(steps)
            while True:
                call = steps.send(self._client.run(call))
        except StopIteration as done:
            return done.value

    def peek(self, filters: dict[str, Any] | None = None, limit: int = 10) -> list[TaskRecord]:
        node = _node(filters)
        found = [
            record
            for partition in self._partitions
            for record in self._client.run(self._commands.peek(self.id, filters_node=node, limit=limit, partition=partition))
        ]
        return sorted(found, key=lambda r: r.order)[:limit]

    def patch(self, task_id: str, changes: dict[str, Any], token: str | None = None) -> TaskRecord | None:
        for partition in self._partitions:
            call = self._commands.patch(self.id, task_id, changes, token=token, partition=partition)
            if (record := self._client.run(call)) is not None:
                return record
        return None

    def extend_lease(self, task_id: str, token: str, seconds: float) -> int:
        *others, last = self._partitions
        for partition in others:
            try:
                return self._extend_lease(task_id, token, seconds, partition)
            except NotFound:
                continue
        return self._extend_lease(task_id, token, seconds, last)

    def _extend_lease(self, task_id: str, token: str, seconds: float, partition: int) -> int:
        return self._client.run(self._commands.extend_lease(self.id, task_id, token, seconds, partition=partition))

    def qsize(self) -> int:
        return sum(self._client.redis.zcard(self._commands.keys(self.id, p).queue) for p in self._partitions)


class AsyncClient(TaskQueues):
    """The asyncio client: the API's own queue object, opened from a URL."""

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "rs", **options: Any) -> AsyncClient:
        import redis.asyncio as aredis

        return cls(aredis.Redis.from_url(url), QueueCommands(prefix=prefix, **options))

    async def pop(  # type: ignore[override]
        self, scheduler_id: str, filters: dict[str, Any] | filters.Node | None = None, limit: int | None = 1, token: str | None = None
    ) -> list[TaskRecord]:
        return await super().pop(scheduler_id, _node(filters), limit, token)

    async def close(self) -> None:
        await self.redis.aclose()
