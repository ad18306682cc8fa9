"""Servers a fault scenario may kill: a private redis-server, a fresh database, ``redisched api``
processes. All on 127.0.0.1, every one stopped, also on failure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis

from redisched.history.migrate import migrate
from tests.conftest import PG_ADMIN_DSN
from tests.support import api as support_api
from tests.support.databases import throwaway_database
from tests.support.servers import free_port, redis_server_binary, wait_for_redis


class RestartableRedis:
    """A private redis-server on a fixed port and folder, which a test may kill -9, SIGSTOP,
    restart (same port, same folder: AOF survives when on) or FLUSHALL."""

    def __init__(self, *extra: str) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="redisched-faults-redis-")
        self.extra = extra
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if "--appendonly" not in self.extra:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [*args, "--dir", self.dir, *self.extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_redis(self.url, timeout=15)
        # Loading an AOF answers LOADING for a moment: wait until it serves.
        deadline = time.monotonic() + 15
        while True:
            try:
                redis.Redis.from_url(self.url).get("x")
                return
            except redis.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown, no save."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process cannot exit
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def __enter__(self) -> RestartableRedis:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A migrated database of its own on the local Postgres, dropped afterwards."""
    with throwaway_database(PG_ADMIN_DSN, "redisched_faults") as dsn:
        asyncio.run(migrate(dsn))
        yield dsn


class ApiProcess(support_api.ApiProcess):
    """``redisched api`` on 127.0.0.1 against the given Redis and Postgres, in its own process,
    with short leases and many tries."""

    def __init__(self, redis_url: str, dsn: str, prefix: str, *, port: int | None = None, lease_s: int = 2) -> None:
        env = {
            **support_api.backend_env(redis_url, dsn, prefix),
            "REDISCHED_DISPATCH_TIMEOUT": str(lease_s),
            "REDISCHED_RUNNING_TIMEOUT": str(lease_s),
            "REDISCHED_MAX_TRIES": "1000",
            # The soak's thousands of requests a second: a line each would cost ~85 us of API
            # CPU per pop (README, Running it); errors are logged regardless.
            "REDISCHED_ACCESS_LOG": "false",
        }
        super().__init__(env, port=port)
