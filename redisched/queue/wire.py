"""The queue's round trips on redis-py's lowest layer: the commands of a batch packed and
written at once on a connection, the replies read by its parser (hiredis), each error reply in
its place. It leaves out what redis-py adds around a call (a pipeline object, a callback per
reply, a retry wrapper, and on asyncio a timer task per write and a deadline per reply): about
half of the client's CPU per round trip, measured in benchmarks/bench_client_path.py.

No retry: a script whose connection failed after it was sent may have run, and running it
again could run it twice (a push refused as its own twin, a second task popped). The caller
hears the error (over HTTP a 503) and decides. A connection that failed is closed; the next
round trip connects again (and a pooled connection found dead is replaced by the pool).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
import redis
import redis.asyncio as aredis
from redis.exceptions import ResponseError, TimeoutError as RedisTimeoutError

Commands = Sequence[tuple[Any, ...]]


def execute(client: redis.Redis, commands: Commands) -> list[Any]:
    """One round trip on a connection of ``client``'s pool (thread-safe, as the pool is):
    each command's reply, or the ResponseError it got."""
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command(_packed(connection, commands), check_health=False)
        return [_reply(connection) for _ in commands]
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)


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
