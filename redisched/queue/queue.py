"""The asyncio side of the queue: runs QueueCommands' script calls on redis.asyncio."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from redisched import filters
from redisched.queue.commands import QueueCommands, ScriptCall
from redisched.queue.keys import QueueKeys, QueueLayout
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
    """The three scheduler queues on one Redis (or Redis Cluster), each in one or more
    partitions (keys.py): a push goes to the partition of its hash, a pop takes from the
    partitions in turn, starting at a different one each time."""

    def __init__(self, redis: Redis | RedisCluster, commands: QueueCommands | None = None) -> None:
        self.redis = redis
        self.commands = commands or QueueCommands()
        self.layout = self.commands.layout
        self._next_start = itertools.count()
        # Concurrent calls share round trips on one Redis; a cluster client routes each call.
        self._pipeliner = None if isinstance(redis, RedisCluster) else Pipeliner(redis)

    async def check_layout(self) -> None:
        """Record the partition count the queues are made with; refuse another one while the
        queues made with the old count still hold tasks (they would be out of sight)."""
        key, wanted = self.layout.layout_key, self.layout.partitions
        if await self.redis.set(key, wanted, nx=True):
            return
        stored = int(await self.redis.get(key) or wanted)
        if stored == wanted:
            return
        old = QueueLayout(self.layout.prefix, stored)
        if sum(await self._each(old.every(), "hlen", "tasks")):
            raise RuntimeError(
                f"the queues hold tasks in {stored} partitions: REDISCHED_PARTITIONS={wanted} would hide them; "
                f"set it back to {stored}, or empty the queues first"
            )
        await self.redis.set(key, wanted)

    async def run(self, call: ScriptCall[T]) -> T:
        if call.script is None or self._pipeliner is None:
            return await run_script(self.redis, call)
        return await self._pipeliner.run(call)

    async def run_all(self, calls: list[ScriptCall[T]]) -> list[T]:
        """Several script calls at once: one round trip through the pipeliner on one Redis,
        concurrent calls on a cluster (redis-py's cluster pipeline refuses EVALSHA). The
        first error among them is raised once all have run."""
        outcomes = await asyncio.gather(*(self.run(call) for call in calls), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes

    async def push(self, scheduler_id: str, **task: Any) -> TaskRecord:
        return await self.run(self.commands.push(scheduler_id, **task))

    async def pop(
        self,
        scheduler_id: str,
        filters_node: filters.Node | None = None,
        limit: int | None = None,
        token: str | None = None,
    ) -> list[TaskRecord]:
        """Pop up to ``limit`` tasks, best first within each partition. With partitions, the
        first one asked changes from pop to pop; the next ones are asked only for what is
        still missing."""
        if self.layout.partitions == 1:
            return await self.run(self.commands.pop(scheduler_id, filters_node=filters_node, limit=limit, token=token))
        steps = self.commands.pop_steps(
            scheduler_id, filters_node=filters_node, limit=limit, token=token, start=next(self._next_start)
        )
        try:
            call = next(steps)
            while True:
                call = steps.send(await self.run(call))
        except StopIteration as done:
            return done.value

    async def peek(self, scheduler_id: str, filters_node: filters.Node | None = None, limit: int = 10) -> list[TaskRecord]:
        """The first ``limit`` queued tasks in queue order, across every partition."""
        calls = [
            self.commands.peek(scheduler_id, filters_node=filters_node, limit=limit, partition=i)
            for i in range(self.layout.partitions)
        ]
        found = await self.run_all(calls)
        if len(found) == 1:
            return found[0]
        return sorted((record for part in found for record in part), key=lambda r: r.order)[:limit]

    async def patch(self, task_id: uuid.UUID | str, changes: dict[str, Any], token: str | None = None) -> TaskRecord | None:
        """Patch a live task wherever it is queued; None when no queue has it. The patch is
        sent to every queue partition at once (one round trip, per node on a cluster): those
        that lack the task answer E_NOT_FOUND, which costs Redis one HGET, instead of a
        lookup round trip before every PATCH."""
        calls = [
            self.commands.patch(keys.queue_id, str(task_id), changes, token=token, partition=keys.partition)
            for keys in self.layout.every()
        ]
        return next((record for record in await self.run_all(calls) if record is not None), None)

    async def requeue(self, scheduler_id: str, task_id: uuid.UUID | str, task_hash: str) -> TaskRecord | None:
        """Requeue a dispatched task handed back unstarted (same id, same hash), wherever in the
        queue's partitions it is; None when the queue holds no such task."""
        calls = [
            self.commands.requeue(scheduler_id, str(task_id), task_hash, partition=keys.partition)
            for keys in self.layout.of(self.commands.scheduler(scheduler_id).id)
        ]
        return next((record for record in await self.run_all(calls) if record is not None), None)

    async def unlink_schedule(self, schedule_id: uuid.UUID | str, tasks: list[tuple[str, str]]) -> int:
        """A schedule was deleted: its live tasks, (scheduler id, task id), no longer name it.
        Each is looked for in every partition of its queue (a PATCH may have moved its hash
        away from the partition it lives in). Returns how many were unlinked."""
        by_queue: dict[str, list[str]] = {}
        for scheduler_id, task_id in tasks:
            by_queue.setdefault(self.commands.scheduler(scheduler_id).id, []).append(str(task_id))
        calls = [
            call
            for queue_id, task_ids in by_queue.items()
            for keys in self.layout.of(queue_id)
            for call in self.commands.unlink(queue_id, str(schedule_id), task_ids, partition=keys.partition)
        ]
        return sum(await self.run_all(calls)) if calls else 0

    async def extend_lease(
        self, scheduler_id: str, task_id: str, token: str, seconds: float, partition: int | None = None
    ) -> int:
        """The lease's new expiry (ms). ``partition`` None: wherever the task is."""
        if partition is None:
            where = await self.locate(task_id) if self.layout.partitions > 1 else None
            partition = where.partition if where is not None else 0
        return await self.run(self.commands.extend_lease(scheduler_id, task_id, token, seconds, partition=partition))

    async def reap(self, scheduler_id: str, max_count: int = 1000) -> tuple[int, int]:
        """Reap expired leases in every partition of the queue: (requeued, failed)."""
        calls = [self.commands.reap(scheduler_id, max_count=max_count, partition=i) for i in range(self.layout.partitions)]
        counts = await self.run_all(calls)
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    async def forget_finished(
        self, scheduler_id: str, items: list[tuple[str, str]], partition: int | None = None
    ) -> int:
        """Drop finished tasks at their stored rev; ``partition`` None: from every partition."""
        if not items:
            return 0
        partitions = range(self.layout.partitions) if partition is None else [partition]
        calls = [self.commands.forget(scheduler_id, items, partition=p) for p in partitions]
        return sum(await self.run_all(calls))

    async def restore(self, record: TaskRecord) -> bool:
        return await self.run(self.commands.restore(record))

    # --- reads -------------------------------------------------------------------------------

    async def get(self, task_id: uuid.UUID | str) -> TaskRecord | None:
        """The live task with this id, from whichever queue holds it."""
        replies = await self._each_partition(("tasks", "data"), str(task_id))
        pairs = zip(replies[0::2], replies[1::2])
        return next((decode_record(raw, data) for raw, data in pairs if raw is not None), None)

    async def locate(self, task_id: uuid.UUID | str) -> QueueKeys | None:
        """The queue partition that holds this live task."""
        found = await self._each_partition(("tasks",), str(task_id))
        return next((keys for keys, hit in zip(self.layout.every(), found) if hit is not None), None)

    async def qsize(self, scheduler_id: str) -> int:
        partitions = self.layout.of(self.commands.scheduler(scheduler_id).id)
        if len(partitions) == 1:
            return await self.redis.zcard(partitions[0].queue)
        return sum(await self._each(partitions, "zcard", "queue"))

    async def last_activity_us(self, scheduler_id: str) -> int | None:
        partitions = self.layout.of(self.commands.scheduler(scheduler_id).id)
        values = await self._each(partitions, "hget", "meta", "last_activity")
        return max((int(value) for value in values if value is not None), default=None)

    async def _each_partition(self, key_names: tuple[str, ...], field: str) -> list[Any]:
        """HGET ``field`` of each named hash of every queue partition, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for keys in self.layout.every():
            for key_name in key_names:
                pipe.hget(keys.key(key_name), field)
        return await pipe.execute()

    async def _each(self, partitions: list[QueueKeys], command: str, key_name: str, *args: Any) -> list[Any]:
        """One command on a key of each partition, in one round trip (per node on a cluster)."""
        pipe = self.redis.pipeline(transaction=False)
        for keys in partitions:
            getattr(pipe, command)(keys.key(key_name), *args)
        return await pipe.execute()

