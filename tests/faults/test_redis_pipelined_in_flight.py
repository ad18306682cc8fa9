"""The asyncio queue with two round trips in flight on its one connection (queue/pipeliner.py,
queue/wire.py) when Redis stops answering or dies: every caller of both hears an error
(a 503 over HTTP) within the round trip's deadline, none hangs, and once Redis is back each
new caller gets its own reply, never one meant for a caller of a broken round trip."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import pytest
import redis
import redis.asyncio as aredis

from redisched.queue.queue import TaskQueues
from tests.faults.common import layout, task_data

pytestmark = pytest.mark.timeout(60, method="thread")

TIMEOUT_S = 1.0
CALLERS = 10  # in a steady stream, a batch of these goes as two round trips (pipeliner.SPLIT_FROM)


class InFlight:
    """Counts the pipeliner's round trips under way at once."""

    def __init__(self, queues: TaskQueues) -> None:
        pipeliner = queues.driver._pipeliner
        self.now = self.most = 0
        send = pipeliner._send_pipeline

        async def counted(wire, calls):
            self.now += 1
            self.most = max(self.most, self.now)
            try:
                return await send(wire, calls)
            finally:
                self.now -= 1

        pipeliner._send_pipeline = counted


async def mixed_calls(queues: TaskQueues, ids: list[str]) -> list[object]:
    """Each caller's call differs (a get of its own task, a queue size), so a reply delivered
    to the wrong caller shows."""
    calls = [queues.get(task_id) if i % 2 else queues.qsize("boefje") for i, task_id in enumerate(ids)]
    return await asyncio.gather(*calls, return_exceptions=True)


async def pushed(queues: TaskQueues, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    for task_id in ids:
        await queues.push("boefje", task_id=task_id, organisation="org1", priority=1, data=task_data(task_id))
    return ids


def assert_own_replies(ids: list[str], replies: list[object], qsize: int) -> None:
    for i, (task_id, reply) in enumerate(zip(ids, replies)):
        if i % 2:
            assert reply is not None and not isinstance(reply, BaseException) and str(reply.id) == task_id, reply
        else:
            assert reply == qsize, reply


@pytest.mark.parametrize("fault", ["paused", "killed"])
async def test_both_round_trips_in_flight_fail_and_the_next_callers_get_their_own_replies(
    private_redis_server, prefix, fault
):
    server = private_redis_server
    client = aredis.Redis.from_url(server.url, socket_timeout=TIMEOUT_S)
    queues = TaskQueues(client, layout(prefix))
    in_flight = InFlight(queues)
    ids = await pushed(queues, CALLERS)
    assert_own_replies(ids, await mixed_calls(queues, ids), CALLERS)  # a burst after a lull: one round trip
    assert in_flight.most == 1
    assert_own_replies(ids, await mixed_calls(queues, ids), CALLERS)  # the stream goes on: two
    assert in_flight.most == 2

    server.signal(signal.SIGSTOP)  # both round trips written, neither answered
    started = time.monotonic()
    calls = asyncio.ensure_future(mixed_calls(queues, ids))
    if fault == "killed":
        await asyncio.sleep(TIMEOUT_S / 4)
        assert in_flight.now == 2
        server.kill()
    try:
        replies = await asyncio.wait_for(calls, TIMEOUT_S + 2)
    finally:
        if fault == "paused":
            server.signal(signal.SIGCONT)
    assert time.monotonic() - started < TIMEOUT_S + 0.5
    assert len(replies) == CALLERS
    for reply in replies:
        assert isinstance(reply, (redis.ConnectionError, redis.TimeoutError)), reply

    if fault == "killed":
        server.start()  # without persistence: empty
        ids = await pushed(queues, CALLERS)
    await asyncio.sleep(0.1)
    assert_own_replies(ids, await mixed_calls(queues, ids), CALLERS)  # the connection replaced
    for _ in range(3):  # each caller its own reply, two round trips in flight again
        in_flight.most = 0
        assert_own_replies(ids, await mixed_calls(queues, ids), CALLERS)
        assert in_flight.most == 2
    await client.aclose()
