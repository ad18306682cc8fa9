"""The asyncio side of the queue: runs QueueCommands' script calls on redis.asyncio."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from redisched import filters
from redisched.models import SCHEDULERS
from redisched.queue.commands import QueueCommands, ScriptCall
from redisched.queue.pipeliner import Pipeliner
from redisched.queue.records import TaskRecord, decode_record

T = TypeVar("T")


async def run_script(redis: Redis | RedisCluster, call: ScriptCall[T]) -> T:
    """Run a script call by SHA; on NOSCRIPT, EVAL puts it back in that server's cache."""
    if call.script is None:
        return call.parse(None)
    keys, args = call.keys, call.args
    try:
        reply = await redis.evalsha(call.script.sha, len(keys), *keys, *args)
    except NoScriptError:
        reply = await redis.eval(call.script.source, len(keys), *keys, *args)
    return call.parse(reply)


class TaskQueues:
    """The three scheduler queues on one Redis (or Redis Cluster)."""

    def __init__(self, redis: Redis | RedisCluster, commands: QueueCommands | None = None) -> None:
        self.redis = redis
        self.commands = commands or QueueCommands()
        # Concurrent calls share round trips on one Redis; a cluster client routes each call.
        self._pipeliner = None if isinstance(redis, RedisCluster) else Pipeliner(redis)

    async def run(self, call: ScriptCall[T]) -> T:
        if call.script is None or self._pipeliner is None:
            return await run_script(self.redis, call)
        return await self._pipeliner.run(call)

    async def push(self, scheduler_id: str, **task: Any) -> TaskRecord:
        return await self.run(self.commands.push(scheduler_id, **task))

    async def pop(
        self,
        scheduler_id: str,
        filters_node: filters.Node | None = None,
        limit: int | None = None,
        token: str | None = None,
    ) -> list[TaskRecord]:
        return await self.run(self.commands.pop(scheduler_id, filters_node=filters_node, limit=limit, token=token))

    async def peek(self, scheduler_id: str, filters_node: filters.Node | None = None, limit: int = 10) -> list[TaskRecord]:
        return await self.run(self.commands.peek(scheduler_id, filters_node=filters_node, limit=limit))

    async def patch(self, task_id: uuid.UUID | str, changes: dict[str, Any], token: str | None = None) -> TaskRecord | None:
        """Patch a live task wherever it is queued; None when no queue has it. The patch is
        sent to every queue at once (one round trip through the pipeliner): the queues that
        lack the task answer E_NOT_FOUND, which costs Redis one HGET, instead of a lookup
        round trip before every PATCH."""
        calls = [self.commands.patch(sid, str(task_id), changes, token=token) for sid in SCHEDULERS]
        outcomes = await asyncio.gather(*(self.run(call) for call in calls), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return next((record for record in outcomes if record is not None), None)

    async def extend_lease(self, scheduler_id: str, task_id: str, token: str, seconds: float) -> int:
        return await self.run(self.commands.extend_lease(scheduler_id, task_id, token, seconds))

    async def reap(self, scheduler_id: str, max_count: int = 1000) -> tuple[int, int]:
        return await self.run(self.commands.reap(scheduler_id, max_count=max_count))

    async def forget_finished(self, scheduler_id: str, items: list[tuple[str, str]]) -> int:
        return await self.run(self.commands.forget(scheduler_id, items)) if items else 0

    async def restore(self, record: TaskRecord) -> bool:
        return await self.run(self.commands.restore(record))

    # --- reads -------------------------------------------------------------------------------

    async def get(self, task_id: uuid.UUID | str) -> TaskRecord | None:
        """The live task with this id, from whichever queue holds it."""
        replies = await self._each_queue(("tasks", "data"), str(task_id))
        pairs = zip(replies[0::2], replies[1::2])
        return next((decode_record(raw, data) for raw, data in pairs if raw is not None), None)

    async def locate(self, task_id: uuid.UUID | str) -> str | None:
        found = await self._each_queue(("tasks",), str(task_id))
        return next((sid for sid, hit in zip(SCHEDULERS, found) if hit is not None), None)

    async def qsize(self, scheduler_id: str) -> int:
        return await self.redis.zcard(self.commands.keys(scheduler_id).queue)

    async def last_activity_us(self, scheduler_id: str) -> int | None:
        value = await self.redis.hget(self.commands.keys(scheduler_id).meta, "last_activity")
        return int(value) if value is not None else None

    async def _each_queue(self, key_names: tuple[str, ...], field: str) -> list[Any]:
        """HGET ``field`` of each named hash of every queue, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for sid in SCHEDULERS:
            for key_name in key_names:
                pipe.hget(self.commands.keys(sid).key(key_name), field)
        return await pipe.execute()
