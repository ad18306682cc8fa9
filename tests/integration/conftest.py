"""Queue fixtures. Tests that take ``queues``, ``client`` or ``backend_redis`` run twice: on
the single Redis of 127.0.0.1:6379 and on a 3-master Redis Cluster the session starts."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from redisched.client import Client
from redisched.history.db import open_pool
from redisched.history.migrate import migrate
from redisched.queue.commands import QueueCommands, QueueOptions
from redisched.queue.queue import TaskQueues
from tests.servers import private_cluster


def make_commands(prefix: str, **overrides) -> QueueCommands:
    return QueueCommands(prefix=prefix, **overrides)


@pytest.fixture(scope="module")
async def pool(pg_dsn):
    """A connection pool on the session's database, migrated (history tests)."""
    await migrate(pg_dsn)
    pool = await open_pool(pg_dsn)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def cluster_url():
    with private_cluster(3) as urls:
        yield urls[0]


@pytest.fixture(params=["redis", "cluster"])
def backend_url(request, redis_url):
    """(kind, url) of the Redis the test runs on."""
    if request.param == "redis":
        return "redis", redis_url
    return "cluster", request.getfixturevalue("cluster_url")


@pytest.fixture
async def backend_redis(backend_url):
    kind, url = backend_url
    client = aredis.Redis.from_url(url) if kind == "redis" else AsyncRedisCluster.from_url(url)
    yield client
    await client.aclose()


@pytest.fixture
def backend_sync_redis(backend_url):
    kind, url = backend_url
    client = redis.Redis.from_url(url) if kind == "redis" else redis.RedisCluster.from_url(url)
    yield client
    client.close()


@pytest.fixture
def queues(backend_redis, key_prefix) -> TaskQueues:
    return TaskQueues(backend_redis, make_commands(key_prefix))


@pytest.fixture
def client(backend_sync_redis, key_prefix) -> Client:
    return Client(backend_sync_redis, make_commands(key_prefix))


__all__ = ["QueueOptions", "make_commands"]
