"""The API under test, on real Redis and Postgres: fixtures that test modules import.

``api``: an httpx client on the ASGI app in this process (snapshotter and lease reaper
running), on a unique Redis prefix and a fresh, migrated database. ``api_process``: the same
over a real socket, ``redisched serve`` in a subprocess on a random port of 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from redisched.app import reap_leases, running, snapshot
from redisched.config import Settings
from redisched.history.migrate import migrate
from redisched.server import create_app
from tests.support.api import ROOT, backend_env, running_api  # noqa: F401  (ROOT re-exported)
from tests.support.databases import throwaway_database

@pytest.fixture(scope="session")
def template_db(pg_dsn: str) -> Iterator[str]:
    """A migrated database that each test's database is copied from (fast: no migration)."""
    with throwaway_database(pg_dsn, "redisched_tmpl") as dsn:
        asyncio.run(migrate(dsn))
        yield dsn.rsplit("/", 1)[1]


@pytest.fixture
def db_dsn(pg_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    with throwaway_database(pg_dsn, "redisched_api", template=template_db) as dsn:
        yield dsn


@pytest.fixture
def settings(redis_url: str, db_dsn: str, key_prefix: str) -> Settings:
    return Settings(redis_url=redis_url, db_uri=db_dsn, key_prefix=key_prefix)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings) as client:
        yield client


@contextlib.asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(settings, snapshot, reap_leases) as services:
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.services = services  # type: ignore[attr-defined]
            yield client


@pytest.fixture
def api_process(settings: Settings) -> Iterator[str]:
    """``redisched serve`` on a random port; yields its base URL."""
    with serving(settings, "serve") as base_url:
        yield base_url


@contextlib.contextmanager
def serving(settings: Settings, command: str = "serve", **env: str) -> Iterator[str]:
    """``redisched <command>`` on ``settings`` with ``env`` added; yields its base URL."""
    environment = backend_env(settings.redis_url, settings.db_uri, settings.key_prefix, cluster=settings.redis_cluster)
    with running_api({**environment, **env}, command=command) as server:
        yield server.url


# --- request bodies --------------------------------------------------------------------------


def boefje_push(input_ooi: str, *, org: str = "org1", priority: int = 10, boefje_id: str = "dns-records", **data) -> dict:
    return {
        "organisation": org,
        "priority": priority,
        "data": {"boefje": {"id": boefje_id, "name": "DNS records", "version": None, **data.pop("boefje", {})},
                 "input_ooi": input_ooi, "organization": org, **data},
    }  # fmt: skip


def normalizer_push(*, org: str = "org1", priority: int = 2) -> dict:
    return {
        "organisation": org,
        "priority": priority,
        "data": {
            "normalizer": {"id": "kat_nmap_normalize", "version": None},
            "raw_data": {
                "id": str(uuid.uuid4()),
                "boefje_meta": {"id": str(uuid.uuid4()), "boefje": {"id": "nmap"}, "input_ooi": None, "organization": org,
                                "started_at": None, "ended_at": None},
                "mime_types": [{"value": "boefje/nmap"}],
            },
        },
    }


def report_push(recipe: str = "recipe-1", *, org: str = "org1", priority: int = 1) -> dict:
    return {"organisation": org, "priority": priority, "data": {"organisation_id": org, "report_recipe_id": recipe}}
