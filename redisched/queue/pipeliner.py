"""Group commit for calls: calls made while a round trip is in flight go together in
the next one, as one pipeline. One caller alone goes straight out; fifty concurrent callers
share a round trip and redis-py's per-call cost. Redis still runs every script on its own,
atomically, in arrival order: batching changes the cost, never the outcome.

Identical pops waiting together (same queue and filter: the runners all send the same one)
become one script run that serves each in turn with its own lease token, exactly as
separate pops in a row would. Finish-and-fetch calls (pop_next) of one queue partition with
the same filter merge the same way: their patches in turn, then one pop for those whose
patch went through (commands.py, lua/pop_next.lua)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from redisched.queue.calls import Call
from redisched.queue.wire import AsyncWire

SendPipeline = Callable[[AsyncWire, Sequence[Call]], Awaitable[list[Any]]]

MAX_BATCH = 256


class _Waiting:
    """One script run to send: a call, or several merged ones, with their callers' futures."""

    __slots__ = ("first", "calls", "futures")

    def __init__(self, call: Call, future: asyncio.Future[Any]) -> None:
        self.first, self.calls, self.futures = call, [call], [future]

    def join(self, call: Call, future: asyncio.Future[Any]) -> None:
        self.calls.append(call)
        self.futures.append(future)

    @property
    def call(self) -> Call:
        """The run to send: merged calls' arguments joined once, when the batch goes out (not
        on every join, which made a group of n cost n² string work)."""
        if len(self.calls) == 1:
            return self.first
        join = self.first.join
        assert join is not None  # a call with a merge_key has one
        return replace(self.first, args=join([c.args for c in self.calls]))  # type: ignore[type-var]

    def deliver(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            replies = [reply] * len(self.futures)
        elif len(self.calls) > 1:
            replies = self.first.split(reply)
        else:
            replies = [reply]
        for future, each in zip(self.futures, replies):
            if future.done():  # its caller went away
                continue
            if isinstance(each, Exception):
                future.set_exception(each)
            else:
                future.set_result(each)

    def fail(self, exc: Exception) -> None:
        for future in self.futures:
            if not future.done():
                future.set_exception(exc)


class Pipeliner:
    """``send_pipeline`` sends one round trip's calls on ``wire`` and returns their raw replies
    (errors in place): queue/driver.py's, the one script-call path. Round trips go one at a
    time, so one connection serves them all."""

    def __init__(self, wire: AsyncWire, send_pipeline: SendPipeline) -> None:
        self.wire = wire
        self._send_pipeline = send_pipeline
        self._waiting: list[_Waiting] = []
        self._mergeable: dict[tuple[Any, ...], _Waiting] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, call: Call) -> Any:
        future = asyncio.get_running_loop().create_future()
        group = self._mergeable.get(call.merge_key) if call.merge_key is not None else None
        if group is not None and len(group.calls) < MAX_BATCH:
            group.join(call, future)
        else:
            group = _Waiting(call, future)
            self._waiting.append(group)
            if call.merge_key is not None:
                self._mergeable[call.merge_key] = group
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return call.parse(await future)

    async def _flush(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                if self._waiting:  # groups left for the next round trip may still be joined
                    self._mergeable = {k: g for k, g in self._mergeable.items() if g not in batch}
                else:
                    self._mergeable = {}
                await self._send(batch)
        finally:
            self._flusher = None

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            replies = await self._execute([group.call for group in batch])
        except BaseException as exc:  # the connection failed: every caller hears it
            for group in batch:
                group.fail(exc if isinstance(exc, Exception) else ConnectionError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        for group, reply in zip(batch, replies):
            group.deliver(reply)

    async def _execute(self, calls: list[Call]) -> list[Any]:
        return await self._send_pipeline(self.wire, calls)
