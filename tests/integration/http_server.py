"""A real ``redisched api`` process on 127.0.0.1 for the HTTP-layer tests (connections, CSRF,
health): its own port, key prefix and database, settings from the environment, its log in a
file (a pipe nobody reads would fill and stall the server), stopped on exit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from tests.acceptance.harness import ROOT, free_port, template_db  # noqa: F401


@dataclass
class ApiProcess:
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)


@dataclass(frozen=True)
class Backends:
    redis_url: str
    db_dsn: str
    key_prefix: str


@pytest.fixture(scope="module")
def backends(redis_url: str, pg_dsn: str, template_db: str) -> Iterator[Backends]:  # noqa: F811
    """A database (copied from the migrated template) and a key prefix for a module's servers."""
    name = f"redisched_http_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield Backends(redis_url, pg_dsn.rsplit("/", 1)[0] + "/" + name, prefix)
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)
    client.close()
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def api_process(backends: Backends, **env: str) -> Iterator[ApiProcess]:
    """``redisched api`` with ``env`` (``REDISCHED_HTTP_HEADER_TIMEOUT="1"``, ...) added."""
    port = free_port()
    environment = {
        **os.environ,
        "REDISCHED_REDIS_URL": backends.redis_url,
        "SCHEDULER_DB_URI": backends.db_dsn,
        "REDISCHED_KEY_PREFIX": backends.key_prefix,
        **env,
    }
    log_dir = tempfile.mkdtemp(prefix="redisched-http-")
    log_path = Path(log_dir) / "api.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "redisched", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=environment, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = ApiProcess(f"http://127.0.0.1:{port}", port, process, log_path)
    try:
        _wait_until_up(server)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log_path.unlink(missing_ok=True)
        os.rmdir(log_dir)


def _wait_until_up(server: ApiProcess, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited: {server.log()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server did not come up: {server.log()[-2000:]}")
