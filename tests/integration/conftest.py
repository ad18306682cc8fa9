"""Queue fixtures. Tests that take ``queues``, ``client`` or ``backend_redis`` run three times:
on the single Redis of 127.0.0.1:6379, on a 3-master Redis Cluster the session starts, and on
that cluster with every queue spread over 3 partitions (one per master)."""

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


BACKENDS = {"redis": 1, "cluster": 1, "cluster-partitioned": 3}  # name -> partitions per queue


@pytest.fixture(params=list(BACKENDS))
def backend_url(request, redis_url):
    """(kind, url) of the Redis the test runs on."""
    if request.param == "redis":
        return "redis", redis_url
    return "cluster", request.getfixturevalue("cluster_url")


@pytest.fixture
def partitions(request, backend_url) -> int:
    """How many partitions each queue of the test's backend has."""
    return BACKENDS[request.node.callspec.params["backend_url"]]


@pytest.fixture
def one_partition() -> None:
    """For a test of the strict order of a whole queue: that order holds per partition, so
    the test runs on one-partition backends only (test_queue_partitions.py covers the others):
    see pytest_collection_modifyitems."""


def pytest_collection_modifyitems(config, items) -> None:
    """Tests taking ``one_partition`` are not run on a partitioned backend: deselected (and
    counted so), not skipped, so that a skip in a run always means something is missing."""
    def partitioned(item) -> bool:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend_url") if callspec else None
        return "one_partition" in getattr(item, "fixturenames", ()) and BACKENDS.get(backend, 1) > 1

    dropped = [item for item in items if partitioned(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not partitioned(item)]


@pytest.fixture
def queue_commands(key_prefix, partitions):
    """QueueCommands for the test's backend: ``queue_commands(scan_budget=50)``."""
    return lambda **overrides: make_commands(key_prefix, partitions=partitions, **overrides)


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
def queues(backend_redis, queue_commands) -> TaskQueues:
    return TaskQueues(backend_redis, queue_commands())


@pytest.fixture
def client(backend_sync_redis, queue_commands) -> Client:
    return Client(backend_sync_redis, queue_commands())


__all__ = ["QueueOptions", "make_commands"]
