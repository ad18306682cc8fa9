"""A real ``redisched api`` process on 127.0.0.1 for the HTTP-layer tests (connections, CSRF,
health): its own port, key prefix and database, settings from the environment, its log in a
file, stopped on exit."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from tests.acceptance.harness import template_db  # noqa: F401
from tests.support.api import ApiProcess, backend_env, running_api
from tests.support.databases import throwaway_database


@dataclass(frozen=True)
class Backends:
    redis_url: str
    db_dsn: str
    key_prefix: str


@pytest.fixture(scope="module")
def backends(redis_url: str, pg_dsn: str, template_db: str) -> Iterator[Backends]:  # noqa: F811
    """A database (copied from the migrated template) and a key prefix for a module's servers."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    with throwaway_database(pg_dsn, "redisched_http", template=template_db) as dsn:
        yield Backends(redis_url, dsn, prefix)
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()


@contextlib.contextmanager
def api_process(backends: Backends, **env: str) -> Iterator[ApiProcess]:
    """``redisched api`` with ``env`` (``REDISCHED_HTTP_HEADER_TIMEOUT="1"``, ...) added."""
    environment = backend_env(backends.redis_url, backends.db_dsn, backends.key_prefix)
    with running_api({**environment, **env}) as server:
        yield server
