"""The API under test, on real Redis and Postgres: fixtures that test modules import.

``api``: an httpx client on the ASGI app in this process (snapshotter and lease reaper
running), on a unique Redis prefix and a fresh, migrated database. ``api_process``: the same
over a real socket, ``redisched serve`` in a subprocess on a random port of 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO

import httpx
import psycopg
import pytest

from redisched.app import reap_leases, running, snapshot
from redisched.config import Settings
from redisched.history.migrate import migrate
from redisched.server import create_app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def template_db(pg_dsn: str) -> Iterator[str]:
    """A migrated database that each test's database is copied from (fast: no migration)."""
    name = f"redisched_tmpl_{uuid.uuid4().hex[:8]}"
    with _admin(pg_dsn) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    asyncio.run(migrate(_dsn(pg_dsn, name)))
    yield name
    with _admin(pg_dsn) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_dsn(pg_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"redisched_api_{uuid.uuid4().hex[:8]}"
    with _admin(pg_dsn) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield _dsn(pg_dsn, name)
    with _admin(pg_dsn) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
    port = free_port()
    environment = {
        **os.environ,
        "REDISCHED_REDIS_URL": settings.redis_url,
        "SCHEDULER_DB_URI": settings.db_uri,
        "REDISCHED_KEY_PREFIX": settings.key_prefix,
        "REDISCHED_REDIS_CLUSTER": "1" if settings.redis_cluster else "0",
        **env,
    }
    # The log (an access log line per request) goes to a file: a pipe nobody reads fills up and
    # blocks the server.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "redisched", command, "--host", "127.0.0.1", "--port", str(port)],
        env=environment,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base_url, process, log)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_until_up(base_url: str, process: subprocess.Popen, log: IO[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited: {log.read().decode()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError("server did not come up")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _admin(pg_dsn: str) -> psycopg.Connection:
    return psycopg.connect(pg_dsn, autocommit=True)


def _dsn(pg_dsn: str, name: str) -> str:
    return pg_dsn.rsplit("/", 1)[0] + "/" + name


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
