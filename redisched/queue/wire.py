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
    """One connection of ``client``'s pool, kept for round trips made one at a time (the
    pipeliner's), with one deadline per round trip: the client's ``socket_timeout``."""

    def __init__(self, client: aredis.Redis) -> None:
        self.client = client
        self.timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        self._connection: Any = None

    async def execute(self, commands: Commands) -> list[Any]:
        connection = self._connection or await self._connect()
        try:
            async with asyncio.timeout(self.timeout):
                if connection.is_connected and await _closed_or_dirty(connection):
                    await connection.disconnect()  # the send below connects again
                await connection.send_packed_command(_packed(connection, commands), check_health=False)
                return [await _async_reply(connection) for _ in commands]
        except TimeoutError:  # the round trip's deadline
            await connection.disconnect(nowait=True)
            raise RedisTimeoutError(f"Redis did not answer within {self.timeout} s") from None
        except BaseException:
            await connection.disconnect(nowait=True)
            raise

    async def _connect(self) -> Any:
        """Take a connection from the pool for good (the pool still closes it with the client).
        Its own per-operation timeouts are off: ``execute`` keeps one for the whole round trip."""
        connection = await self.client.connection_pool.get_connection()
        connection.socket_timeout = None
        self._connection = connection
        return connection


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
