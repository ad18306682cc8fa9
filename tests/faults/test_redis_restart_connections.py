"""The clients' kept connections across a Redis restart (queue/wire.py): a connection Redis
closed while it sat idle is found dead before the next round trip and replaced, so the first
call after a restart succeeds, as it did when every call took its connection from redis-py's
pool; and a call made while Redis is down fails (a 503 over HTTP) instead of hanging."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
import redis.asyncio as aredis

from redisched.client import Client
from redisched.queue.queue import TaskQueues
from tests.faults.common import layout, task_data

pytestmark = pytest.mark.timeout(60, method="thread")


def test_the_sync_client_goes_on_after_a_restart_without_a_failed_call(private_redis_server, prefix):
    client = Client(redis.Redis.from_url(private_redis_server.url, socket_timeout=5), layout(prefix))
    queue = client.queue("boefje")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    queue.push(task_id=first, organisation="org1", priority=1, data=task_data(first))
    assert queue.qsize() == 1
    private_redis_server.kill()
    private_redis_server.start()  # without persistence: empty
    queue.push(task_id=second, organisation="org1", priority=1, data=task_data(second))  # the first call since
    assert [task.id for task in queue.pop(limit=1)] == [second]
    private_redis_server.kill()
    with pytest.raises(redis.ConnectionError):
        queue.qsize()
    private_redis_server.start()
    assert queue.qsize() == 0
    client.close()


async def test_the_async_queue_goes_on_after_a_restart_without_a_failed_call(private_redis_server, prefix):
    client = aredis.Redis.from_url(private_redis_server.url, socket_timeout=5)
    queues = TaskQueues(client, layout(prefix))
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    await queues.push("boefje", task_id=first, organisation="org1", priority=1, data=task_data(first))
    assert await queues.qsize("boefje") == 1
    private_redis_server.kill()
    private_redis_server.start()
    await asyncio.sleep(0.1)  # a serving loop sees the close at once; the blocking restart ran no loop turn
    # the pipeliner's kept connection was closed by the restart: replaced, not a failed call
    await queues.push("boefje", task_id=second, organisation="org1", priority=1, data=task_data(second))
    assert await queues.qsize("boefje") == 1
    private_redis_server.kill()
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        await queues.qsize("boefje")
    private_redis_server.start()
    assert await queues.qsize("boefje") == 0
    await client.aclose()
