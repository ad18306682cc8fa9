"""The queue's round trips on redis-py's lowest layer: the commands of a batch packed and
written at once on a connection, the replies read by its parser (hiredis), each error reply in
its place. It leaves out what redis-py adds around a call (a pipeline object, a callback per
reply, a retry wrapper, and on asyncio a timer task per write and a deadline per reply): about
half of the client's CPU per round trip, measured in benchmarks/bench_client_path.py.

No retry: a script whose connection failed after it was sent may have run, and running it
again could run it twice (a push refused as its own twin, a second task popped). The caller
hears the error (over HTTP a 503) and decides. A connection that failed is closed; the next
round trip connects again, and a kept connection Redis closed meanwhile (a restart) is
found so before a round trip and replaced, as redis-py's pool does.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

import hiredis
import redis
import redis.asyncio as aredis
from redis.exceptions import ResponseError, TimeoutError as RedisTimeoutError

Commands = Sequence[tuple[Any, ...]]


class Wire:
    """Round trips on connections taken from ``client``'s pool for good and kept here, free
    ones in a list (append and pop are atomic: threads share a client safely). As many
    connections as threads ever called at once; the pool still closes them with the client.
    Taking one from redis-py's pool and giving it back costs ~17 µs a call (redis-py 8)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._free: list[Any] = []
        self._pid = os.getpid()

    def execute(self, commands: Commands) -> list[Any]:
        """Each command's reply, or the ResponseError it got."""
        if self._pid != os.getpid():  # a forked child: its parent's sockets are not its own
            self._free, self._pid = [], os.getpid()
        connection = self._free.pop() if self._free else self.client.connection_pool.get_connection()
        try:
            _drop_if_dead(connection)
            connection.send_packed_command(_packed(connection, commands), check_health=False)
            return [_reply(connection) for _ in commands]
        except BaseException:
            connection.disconnect()
            raise
        finally:
            self._free.append(connection)


class AsyncWire:
    """One connection of ``client``'s pool, kept for the pipeliner's round trips, up to a few
    in flight at once: each is written as soon as the one before it is, and reads its replies
    once the one before it has read its own (Redis answers in order), so a second batch is on
    its way while Redis runs the first. One deadline per round trip: the client's
    ``socket_timeout``, counted from its start. A round trip that fails closes the connection,
    and every round trip written on it after fails too, without reading: no caller is left
    waiting, and no reply meant for one is read by another."""

    def __init__(self, client: aredis.Redis) -> None:
        self.client = client
        self.timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        self._connection: Any = None
        self._last: _Turn | None = None  # the round trip most recently started
        self._generation = 0  # the connection's: counts its failures

    async def execute(self, commands: Commands) -> list[Any]:
        before, turn = self._last, _Turn()
        self._last = turn
        generation = self._generation
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    if before is not None and not before.written.done():
                        await before.written  # writes go out in the order round trips started
                    if self._generation != generation:
                        raise redis.exceptions.ConnectionError("Redis connection failed before this round trip was sent")
                    connection = self._connection or await self._connect()
                    if (before is None or before.read.done()) and connection.is_connected:
                        if await _closed_or_dirty(connection):  # nothing in flight: stale bytes or a closed socket
                            await connection.disconnect()  # the send below connects again
                    await connection.send_packed_command(_packed(connection, commands), check_health=False)
                finally:
                    _done(turn.written)
                try:
                    if before is not None and not before.read.done():
                        await before.read  # replies come in the order the round trips were written
                    if self._generation != generation:
                        raise redis.exceptions.ConnectionError("Redis connection failed with this round trip in flight")
                    return [await _async_reply(connection) for _ in commands]
                finally:
                    _done(turn.read)
        except TimeoutError:  # the round trip's deadline
            await self._fail(generation)
            raise RedisTimeoutError(f"Redis did not answer within {self.timeout} s") from None
        except BaseException as exc:
            failed_before = self._generation != generation
            await self._fail(generation)
            if failed_before and not isinstance(exc, redis.exceptions.RedisError) and isinstance(exc, Exception):
                # closed under this round trip by one that failed before it
                raise redis.exceptions.ConnectionError(f"Redis connection failed: {exc!r}") from exc
            raise
        finally:
            if self._last is turn:
                self._last = None

    async def _fail(self, generation: int) -> None:
        """Close the connection this round trip was on (once: a later one may already be on a
        new connection), so those written after it fail and the next one connects again."""
        if self._generation == generation:
            self._generation += 1
            if self._connection is not None:
                await self._connection.disconnect(nowait=True)

    async def _connect(self) -> Any:
        """Take a connection from the pool for good (the pool still closes it with the client).
        Its own per-operation timeouts are off: ``execute`` keeps one for the whole round trip."""
        connection = await self.client.connection_pool.get_connection()
        connection.socket_timeout = None
        self._connection = connection
        return connection


class _Turn:
    """A round trip's place in line: done once written, done once its replies are read (or it
    failed)."""

    __slots__ = ("written", "read")

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.written: asyncio.Future[None] = loop.create_future()
        self.read: asyncio.Future[None] = loop.create_future()


def _done(future: asyncio.Future[None]) -> None:
    if not future.done():  # a round trip behind that gave up waiting on it cancelled it
        future.set_result(None)


def _drop_if_dead(connection: Any) -> None:
    """A kept connection Redis closed meanwhile (a restart) reads as readable: disconnect it,
    and the send connects again, as redis-py's pool does when it hands a connection out."""
    if connection.is_connected:
        try:
            dead = connection.can_read()
        except (ConnectionError, OSError, redis.exceptions.ConnectionError):
            dead = True
        if dead:
            connection.disconnect()


async def _closed_or_dirty(connection: Any) -> bool:
    try:
        return await connection.can_read()
    except (ConnectionError, OSError, redis.exceptions.ConnectionError):
        return True


def _packed(connection: Any, commands: Commands) -> list[bytes]:
    """The commands in RESP, packed by hiredis itself: a third of the cost of redis-py's
    ``pack_commands`` (which checks and converts each argument first; a pop with the runners'
    filter has 44). Arguments hiredis does not take go through redis-py's, to fail as it does."""
    try:
        return [hiredis.pack_command(command) for command in commands]
    except TypeError:
        return connection.pack_commands(commands)


def _reply(connection: Any) -> Any:
    try:
        return connection.read_response()
    except ResponseError as exc:  # read whole: the connection stays in step
        return exc


async def _async_reply(connection: Any) -> Any:
    try:
        return await connection.read_response()
    except ResponseError as exc:
        return exc
