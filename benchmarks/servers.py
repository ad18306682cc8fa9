"""Servers a benchmark starts for itself on 127.0.0.1 and stops after: a private redis-server
(tests/support/servers.py's), a private Postgres database on the local server, API processes and the
constant-body "ceiling" app under uvicorn.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.databases import throwaway_database
from tests.support.servers import free_port, private_redis, wait_for_redis  # noqa: F401  (re-exported)

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_DSN = os.environ.get("REDISCHED_BENCH_PG_DSN", os.environ.get("REDISCHED_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))


def postgres_available(dsn: str = PG_ADMIN_DSN) -> str | None:
    """None when Postgres answers, else why not."""
    import psycopg

    try:
        psycopg.connect(dsn, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not here"
        return f"{type(exc).__name__}: {exc}".strip()
    return None


@contextlib.contextmanager
def private_database(admin_dsn: str = PG_ADMIN_DSN) -> Iterator[str]:
    """A fresh database on the local Postgres, dropped afterwards."""
    with throwaway_database(admin_dsn, "redisched_bench") as dsn:
        yield dsn


def wait_for_http(port: int, path: str = "/health", timeout: float = 30, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing answers on 127.0.0.1:{port}{path} after {timeout} s")
        time.sleep(0.1)


# port -> pid of the server process started for it (py-spy attaches to it).
PIDS: dict[int, int] = {}


@contextlib.contextmanager
def process(
    args: list[str], *, env: dict[str, str] | None = None, port: int, path: str, name: str, root: Path = ROOT
) -> Iterator[int]:
    """A server process in its own process group, run from the source tree ``root``, its log in
    a temp file (shown on failure)."""
    log = tempfile.NamedTemporaryFile(prefix=f"redisched-bench-{name}-", suffix=".log", delete=False)
    env = {**os.environ, **(env or {})} if root == ROOT else {**os.environ, **(env or {}), "PYTHONPATH": str(root)}
    proc = subprocess.Popen(args, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_for_http(port, path, proc=proc)
        except Exception:
            log.flush()
            tail = Path(log.name).read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} did not start:\n{tail}") from None
        PIDS[port] = proc.pid
        yield port
    finally:
        PIDS.pop(port, None)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()
        Path(log.name).unlink(missing_ok=True)


@contextlib.contextmanager
def api_server(
    redis_url: str, db_dsn: str, *, workers: int = 1, prefix: str = "rs", access_log: bool = False,
    env: dict[str, str] | None = None, root: Path = ROOT,
) -> Iterator[int]:
    """``redisched api`` on a free port (``--workers`` processes behind one socket), its access
    log off as the ceiling app's unless asked for (the default of a deployment is on); ``root``:
    another source tree's (benchmarks/bench_ab.py's baseline)."""
    port = free_port()
    args = [sys.executable, "-m", "redisched", "api", "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        args += ["--workers", str(workers)]
    env_base = {"REDISCHED_REDIS_URL": redis_url, "SCHEDULER_DB_URI": db_dsn, "REDISCHED_KEY_PREFIX": prefix,
                "SCHEDULER_LOGGING_FORMAT": "text", "DEBUG": "false", "REDISCHED_ACCESS_LOG": str(access_log).lower()}
    with process(args, env={**env_base, **(env or {})}, port=port, path="/health", name="api", root=root) as port:
        yield port


@contextlib.contextmanager
def ceiling_server(*, workers: int = 1) -> Iterator[int]:
    """The constant-body Starlette app (benchmarks/constapp.py) under the same uvicorn setup."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "benchmarks.constapp:app", "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--log-level", "warning"]
    if workers > 1:
        args += ["--workers", str(workers)]
    with process(args, port=port, path="/health", name="ceiling") as port:
        yield port


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
