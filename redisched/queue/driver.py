"""Sends a plan (queue/calls.py) to Redis: ``SyncDriver`` on redis-py, ``AsyncDriver`` on
redis.asyncio (through the pipeliner on one Redis, so concurrent callers share round trips).

Each batch a plan yields goes out at once: in one round trip on one Redis (queue/wire.py,
redis-py's lowest layer); on a cluster, where
redis-py's pipeline refuses scripts, call by call (concurrently on asyncio). Once every
call of the batch has answered, the first error among them is raised in the caller.

``sent`` is the one script-call path: scripts go as FCALL of the library's functions
(queue/scripts.py); when the server lacks them (a restart without persistence, a failover,
``FUNCTION FLUSH``), the library is loaded (FUNCTION LOAD REPLACE: on a cluster, every
primary) and those calls go again: no extra round trip when all is well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio as aredis
from redis.exceptions import ResponseError

from redisched.queue.calls import Batch, Call, Plan
from redisched.queue.pipeliner import Pipeliner
from redisched.queue.scripts import is_not_loaded, library, not_loaded
from redisched.queue.wire import AsyncWire, Wire

T = TypeVar("T")

Commands = list[tuple[Any, ...]]


def sent(calls: Sequence[Call]) -> Generator[Commands, list[Any], list[Any]]:
    """The commands to send for ``calls``; if functions were missing, the library's load, then
    those calls again. Returns one raw reply (or the error it got) per call."""
    replies = yield [call.command() for call in calls]
    missing = [i for i, reply in enumerate(replies) if is_not_loaded(reply)]
    if missing:
        [loaded] = yield [library().load_command()]
        if isinstance(loaded, Exception):  # the direct client's ACL user may not load them
            for i in missing:
                replies[i] = not_loaded(loaded)
            return replies
        again = yield [calls[i].command() for i in missing]
        for i, reply in zip(missing, again):
            replies[i] = reply
    return replies


def results(calls: Sequence[Call], replies: list[Any]) -> list[Any]:
    """Each call's parsed reply; the first error among them raised once all are parsed."""
    parsed, error = [], None
    for call, reply in zip(calls, replies):
        try:
            if isinstance(reply, Exception):
                raise reply
            parsed.append(call.parse(reply))
        except Exception as exc:  # noqa: PERF203 - one per batch at most, usually none
            error = error or exc
            parsed.append(None)
    if error is not None:
        raise error
    return parsed


def finish(plan: Plan[T], value: Any) -> tuple[bool, Any]:
    """Send ``value`` into the plan: (True, its next batch) or (False, its result)."""
    try:
        return True, plan.send(value)
    except StopIteration as done:
        return False, done.value


class SyncDriver:
    def __init__(self, client: redis.Redis | redis.RedisCluster) -> None:
        self.redis = client
        self._one_by_one = isinstance(client, redis.RedisCluster)
        self._wire = None if self._one_by_one else Wire(client)

    def run(self, plan: Plan[T]) -> T:
        going, step = finish(plan, None)
        while going:
            going, step = finish(plan, self.send(step))
        return step

    def send(self, calls: Batch) -> list[Any]:
        sending = sent(calls)
        going, commands = finish(sending, None)
        while going:
            going, commands = finish(sending, self._execute(commands))
        return results(calls, commands)

    def _execute(self, commands: Commands) -> list[Any]:
        if self._one_by_one:
            return [_reply_or_error(self.redis.execute_command, args, **routed(self.redis, args)) for args in commands]
        return self._wire.execute(commands)


class AsyncDriver:
    def __init__(self, client: aredis.Redis | aredis.RedisCluster) -> None:
        self.redis = client
        # Concurrent calls share round trips on one Redis; a cluster client routes each call.
        self._pipeliner = None if isinstance(client, aredis.RedisCluster) else Pipeliner(AsyncWire(client), send_pipeline)

    async def run(self, plan: Plan[T]) -> T:
        going, step = finish(plan, None)
        while going:
            going, step = finish(plan, await self.send(step))
        return step

    async def send(self, calls: Batch) -> list[Any]:
        if self._pipeliner is not None:
            if len(calls) == 1:
                return [await self._pipeliner.run(calls[0])]
            outcomes = await asyncio.gather(*(self._pipeliner.run(call) for call in calls), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            return outcomes
        # Every call ends before the first error is raised: none is left running unawaited.
        replies = await asyncio.gather(*(self._one(call) for call in calls), return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException) and not isinstance(reply, Exception):
                raise reply
        return results(calls, replies)

    async def _one(self, call: Call) -> Any:
        await self.redis.initialize()  # the slot map routed() reads (a no-op once known)
        sending = sent([call])
        going, commands = finish(sending, None)
        while going:
            args = commands[0]
            reply = await _async_reply_or_error(self.redis.execute_command, args, **routed(self.redis, args))
            going, commands = finish(sending, [reply])
        return commands[0]


async def send_pipeline(connection: AsyncWire, calls: Sequence[Call]) -> list[Any]:
    """The raw replies of ``calls``, sent in one round trip (the pipeliner's)."""
    sending = sent(calls)
    going, commands = finish(sending, None)
    while going:
        going, commands = finish(sending, await connection.execute(commands))
    return commands


def routed(cluster: Any, args: tuple[Any, ...]) -> dict[str, Any]:
    """On a cluster, FCALL goes to the primary of its first key's slot: left to itself,
    redis-py would ask the server for the keys of every FCALL (COMMAND GETKEYS: a round trip,
    and a command the direct client's ACL user does not hold). FUNCTION LOAD goes to every
    primary (redis.asyncio's cluster client would not know where to send it)."""
    name = str(args[0]).upper()
    if name in ("FCALL", "FCALL_RO") and int(args[2]) > 0:
        return {"target_nodes": cluster.get_node_from_key(args[3])}
    if name == "FUNCTION":
        return {"target_nodes": cluster.get_primaries()}
    return {}


def _reply_or_error(execute: Callable[..., Any], args: tuple[Any, ...], **options: Any) -> Any:
    try:
        return execute(*args, **options)
    except ResponseError as exc:  # the script's own error, or a missing function: the caller decides
        return exc


async def _async_reply_or_error(execute: Callable[..., Awaitable[Any]], args: tuple[Any, ...], **options: Any) -> Any:
    try:
        return await execute(*args, **options)
    except ResponseError as exc:
        return exc
