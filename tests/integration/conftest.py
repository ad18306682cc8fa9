"""Queue fixtures. Tests that take ``queues``, ``make_queues`` or ``backend_redis`` run on the
single Redis of 127.0.0.1:6379, on a 3-master Redis Cluster the session starts, and on that
cluster with every queue spread over 3 partitions (one per master); ``queues`` and
``make_queues`` each time through both facades, the asyncio ``TaskQueues`` and the sync
``Client``, so the two are held to the same results."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from redisched.client import Client
from redisched.history.db import open_pool
from redisched.history.migrate import migrate
from redisched.queue.facade import QueueFacade
from redisched.queue.layout import QueueLayout, QueueOptions
from redisched.queue.queue import TaskQueues
from tests.support.servers import private_cluster


def make_layout(prefix: str, **overrides) -> QueueLayout:
    return QueueLayout(prefix=prefix, **overrides)


class Awaited:
    """The sync ``Client`` behind the asyncio facade's face: each method's result awaitable,
    so one test body drives either facade."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __getattr__(self, name: str):
        attribute = getattr(self.client, name)
        if name in ("redis", "layout", "commands") or not callable(attribute):
            return attribute

        async def call(*args, **kwargs):
            return attribute(*args, **kwargs)

        return call


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
def queue_layout(key_prefix, partitions):
    """The QueueLayout for the test's backend: ``queue_layout(scan_budget=50)``."""
    return lambda **overrides: make_layout(key_prefix, partitions=partitions, **overrides)


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


FACADES = ("async", "sync")


def facade_maker(request, facade: str, layout_of, clients=("backend_redis", "backend_sync_redis")):
    """``make(**layout overrides)``: queues through ``facade`` on the (async, sync) client
    fixtures named by ``clients`` (resolved now: an async fixture cannot start in a test)."""
    client = request.getfixturevalue(clients[0] if facade == "async" else clients[1])

    def make(**overrides) -> QueueFacade:
        layout = layout_of(**overrides)
        return TaskQueues(client, layout) if facade == "async" else Awaited(Client(client, layout))

    return make


@pytest.fixture(params=FACADES)
def make_queues(request, queue_layout):
    """Queues with layout overrides (``make_queues(dispatch_lease_ms=50)``), through each facade."""
    return facade_maker(request, request.param, queue_layout)


@pytest.fixture
def queues(make_queues) -> QueueFacade:
    return make_queues()


__all__ = ["QueueOptions", "make_layout"]
