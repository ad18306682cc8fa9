"""Stopping a background loop that was cancelled, even when the cancellation got lost.

On Python 3.11 a task's cancellation can be lost on its way: ``asyncio.wait_for`` returns the
result instead when it arrives in the same loop turn as the cancel (CPython gh-86296, fixed in
3.12); psycopg_pool waits for a free connection with it and redis-py sends under a socket
timeout with it. Under a socket timeout it can also come out as a TimeoutError. A loop that goes on after such a call sleeps into its next round, or never stops
(a SIGTERM'd worker waits for it). The request stays counted on the task
(``Task.cancelling``), so every loop that runs until cancelled asks before it waits for its
next round or retries.
"""

from __future__ import annotations

import asyncio


def stop_if_cancelled(cause: BaseException | None = None) -> None:
    """Raise CancelledError (from ``cause``, an error that may stand for the cancellation)
    when this task was asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling() > 0:
        raise asyncio.CancelledError from cause
