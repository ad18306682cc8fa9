"""A cancellation lost on its way, as Python 3.11 loses it: for tests of loops that must stop
anyway (redisched/cancellation.py)."""

from __future__ import annotations

import asyncio
from typing import Any


async def lose_cancellation(result: Any = None) -> Any:
    """``result`` through asyncio.wait_for, this task cancelled in the very loop turn the
    result arrives. On Python 3.11 wait_for then returns the result and the cancellation is
    lost (CPython gh-86296), as when psycopg_pool hands out a connection, or redis-py's send
    under a socket timeout ends, at that moment; on 3.12 and later it raises CancelledError."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    arrived = loop.create_future()

    async def handed() -> Any:
        return await arrived

    def hand() -> None:
        arrived.set_result(result)
        task.cancel()

    loop.call_soon(hand)
    return await asyncio.wait_for(handed(), 5)
