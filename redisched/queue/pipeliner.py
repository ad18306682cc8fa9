"""Group commit for calls: calls made while a round trip is in flight go together in
the next one, as one pipeline. One caller alone goes straight out; fifty concurrent callers
share a round trip and redis-py's per-call cost. Two round trips may be in flight on the
connection at once, so Redis runs one batch while this process reads the last and builds the
next (``Pipeliner``). Redis still runs every script on its own,
atomically, in arrival order: batching changes the cost, never the outcome.

Identical pops waiting together (same queue and filter: the runners all send the same one)
become one script run that serves each in turn with its own lease token, exactly as
separate pops in a row would. Finish-and-fetch calls (pop_next) of one queue partition with
the same filter merge the same way: their patches in turn, then one pop for those whose
patch went through (commands.py, lua/pop_next.lua)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redisched.queue.calls import Call, ScriptCall
from redisched.queue.wire import AsyncWire

SendPipeline = Callable[[AsyncWire, Sequence[Call]], Awaitable[list[Any]]]

MAX_BATCH = 256
DEPTH = 2  # round trips in flight at once
# Calls waiting from which a lone batch goes as two halves (below, a second round trip
# costs about what the overlap saves).
SPLIT_FROM = 8
# Split only while this process sits idle for at least this share of a lone round trip: the
# overlap fills that idle time. A process busy meanwhile (an API server's request handling)
# would only pay for the second round trip.
IDLE_TO_SPLIT = 0.3


class _Waiting:
    """One script run to send: a call, or several merged ones, with their callers' futures."""

    __slots__ = ("first", "calls", "futures")

    def __init__(self, call: Call, future: asyncio.Future[Any]) -> None:
        self.first, self.calls, self.futures = call, [call], [future]

    def join(self, call: Call, future: asyncio.Future[Any]) -> None:
        self.calls.append(call)
        self.futures.append(future)

    def rest(self, keep: int) -> _Waiting:
        """Keep the first ``keep`` calls; the others, a group of their own, returned."""
        rest = _Waiting(self.calls[keep], self.futures[keep])
        rest.calls, rest.futures = self.calls[keep:], self.futures[keep:]
        del self.calls[keep:], self.futures[keep:]
        return rest

    @property
    def call(self) -> Call:
        """The run to send: merged calls' arguments joined once, when the batch goes out (not
        on every join, which made a group of n cost n² string work)."""
        if len(self.calls) == 1:
            return self.first
        first = self.first
        assert isinstance(first, ScriptCall) and first.join is not None  # a call with a merge_key has one
        return ScriptCall(first.script, first.keys, first.join([c.args for c in self.calls]), first.parse)

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
    (errors in place): queue/driver.py's, the one script-call path. Up to ``DEPTH`` round
    trips are in flight on the one connection (Redis answers in order, so calls still run in
    the order they were made): while Redis runs one batch, this process reads the replies of
    the one before and builds the next, instead of each waiting on the other. A batch that
    would go out alone in a steady stream is sent as two halves, so that the two overlap."""

    def __init__(self, wire: AsyncWire, send_pipeline: SendPipeline) -> None:
        self.wire = wire
        self._send_pipeline = send_pipeline
        self._waiting: list[_Waiting] = []
        self._mergeable: dict[tuple[Any, ...], _Waiting] = {}
        self._senders = 0  # round trips in flight, or about to be
        self._sender_due = False  # a sender started that has not taken its batch yet
        self._last_count = 0  # calls waiting when the last batch was taken
        self._idle_share = 0.5  # of lone round trips' time this process sat idle (a moving mean)

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
        if self._senders < DEPTH and not self._sender_due:
            self._start_sender()
        return call.parse(await future)

    def _start_sender(self) -> None:
        self._senders += 1
        self._sender_due = True
        asyncio.get_running_loop().create_task(self._sender())

    async def _sender(self) -> None:
        """Round trips one after the other while calls wait. It first runs after the callers
        of this turn of the event loop have made theirs."""
        self._sender_due = False
        try:
            while self._waiting:
                batch = self._take(half=self._senders == 1)
                if self._waiting and self._senders < DEPTH and not self._sender_due:
                    self._start_sender()  # the rest goes next, written behind this batch
                if self._senders > 1:
                    await self._send(batch)
                    continue
                wall, cpu = time.perf_counter(), time.process_time()
                await self._send(batch)
                elapsed = time.perf_counter() - wall
                if elapsed > 0:  # the share of a lone round trip this process sat idle, waiting on Redis
                    idle = 1 - (time.process_time() - cpu) / elapsed
                    self._idle_share += (idle - self._idle_share) / 4
        finally:
            self._senders -= 1

    def _take(self, half: bool) -> list[_Waiting]:
        """The next round trip's groups: up to MAX_BATCH, or half the calls waiting when no
        other round trip is in flight, the batch before was as large (a steady stream of
        batches, as a pool of workers makes: a burst after a lull goes whole, as one script
        run per merged group, since nothing would overlap it) and this process sat idle
        through much of its lone round trips (Redis, not this process, the bottleneck). A merged group cut in two runs
        its calls in the same order, in two script runs. Groups left waiting may still be
        joined; taken ones not."""
        waiting = self._waiting
        count = sum(len(group.calls) for group in waiting)
        steady, self._last_count = self._last_count >= SPLIT_FROM, count
        if half and steady and count >= SPLIT_FROM and self._idle_share >= IDLE_TO_SPLIT:
            batch, taken = [], 0
            while taken < count // 2 and len(batch) < MAX_BATCH:
                group = waiting[0]
                room = count // 2 - taken
                if len(group.calls) > room:
                    waiting[0] = group.rest(room)
                    if self._mergeable.get(group.first.merge_key) is group:
                        self._mergeable[group.first.merge_key] = waiting[0]
                else:
                    del waiting[0]
                batch.append(group)
                taken += len(group.calls)
        else:
            batch, self._waiting = waiting[:MAX_BATCH], waiting[MAX_BATCH:]
        if self._waiting:
            self._mergeable = {k: g for k, g in self._mergeable.items() if g not in batch}
        else:
            self._mergeable = {}
        return batch

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
