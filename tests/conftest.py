"""Shared fixtures: real servers on 127.0.0.1, isolated per test.

Redis isolation is by key prefix (every test gets its own), so test runs never FLUSHDB and
can share one server. Postgres isolation is by database: one fresh database per session.
In CI a missing server is a failure, never a skip.
"""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
import redis
import redis.asyncio as aredis

from tests.support.databases import throwaway_database

REDIS_URL = os.environ.get("REDISCHED_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_DSN = os.environ.get("REDISCHED_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("REDISCHED_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def _delete_prefix(client: redis.Redis, prefix: str) -> None:
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - environment failure
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture
def key_prefix(redis_url: str):
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    _delete_prefix(client, prefix)
    client.close()


@pytest.fixture
def sync_redis(redis_url: str):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def async_redis(redis_url: str):
    client = aredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def stream_redis(redis_url: str):
    """For loops that block on streams (the snapshotter): no socket timeout, as in app.py's
    loop_redis (a read under one can swallow the loop's cancellation on Python 3.11)."""
    client = aredis.Redis.from_url(redis_url, socket_timeout=None)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """A fresh Postgres database for this test session, dropped afterwards."""
    try:
        psycopg.connect(PG_ADMIN_DSN, connect_timeout=5).close()
    except psycopg.OperationalError as exc:  # pragma: no cover - environment failure
        pytest.fail(f"Postgres is not reachable at {PG_ADMIN_DSN}: {exc}")
    with throwaway_database(PG_ADMIN_DSN, "redisched_test") as dsn:
        yield dsn


@pytest.fixture(scope="session", autouse=True)
async def no_task_outlives_the_session():
    """A task still running when the session's loop closes would hang the run (a Redis read
    can swallow its cancellation): name and cancel the leftovers, and fail loudly."""
    import asyncio

    yield
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    for task in leftovers:
        print(f"\nleft running after the tests: {task.get_name()} {task.get_coro()}")
        task.cancel()
