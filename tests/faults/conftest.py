"""Fault scenarios: each starts the servers it kills (private redis-server, private Postgres,
private API processes) and needs the local Postgres (for fresh databases) and RabbitMQ."""

from __future__ import annotations

import uuid

import pytest

from tests.faults.servers import RestartableRedis, fresh_database


@pytest.fixture
def prefix() -> str:
    return f"f{uuid.uuid4().hex[:8]}"


@pytest.fixture
def dsn():
    with fresh_database() as dsn:
        yield dsn


@pytest.fixture
def private_redis_server():
    with RestartableRedis() as server:
        yield server
