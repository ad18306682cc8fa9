"""A ``redisched`` process (``api``, ``serve`` or ``worker``) on 127.0.0.1 at a free port, settings from
its environment, its output in a file (a pipe nobody reads fills up and stalls the server)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


class ApiProcess:
    """``python -m redisched <command>`` with ``env`` added to this process's environment; it
    may be started again on the same port after a stop or a kill."""

    def __init__(self, env: dict[str, str], *, command: str = "api", port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        self.command = command
        self.process: subprocess.Popen | None = None
        handle, name = tempfile.mkstemp(prefix=f"redisched-{command}-", suffix=".log")
        os.close(handle)
        self.log_path = Path(name)

    def start(self, timeout: float = 30) -> ApiProcess:
        """Start it and wait until /health answers 200."""
        cli = [sys.executable, "-m", "redisched", self.command, "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(cli, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redisched {self.command} exited with {self.process.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"redisched {self.command} not up within {timeout} s:\n{self.output()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def output(self) -> str:
        """The log's tail, for a failure message."""
        return self.log()[-4000:]

    def terminate(self) -> None:
        """SIGTERM, without waiting."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """A crash: SIGKILL."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def close(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


class WorkerProcess(ApiProcess):
    """``python -m redisched worker`` (no HTTP): up once it logs that its loops run."""

    READY = "worker running"

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env, command="worker")

    def start(self, timeout: float = 30) -> WorkerProcess:
        with self.log_path.open("ab") as log:
            offset = log.tell()
            cli = [sys.executable, "-m", "redisched", "worker"]
            self.process = subprocess.Popen(cli, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while self.READY not in self.log_path.read_text(errors="replace")[offset:]:
            if self.process.poll() is not None:
                raise RuntimeError(f"redisched worker exited with {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redisched worker not up within {timeout} s:\n{self.output()}")
            time.sleep(0.05)
        return self

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)


@contextlib.contextmanager
def running_api(env: dict[str, str], *, command: str = "api") -> Iterator[ApiProcess]:
    """An ``ApiProcess`` started, and stopped and its log removed afterwards."""
    server = ApiProcess(env, command=command)
    try:
        yield server.start()
    finally:
        server.close()


def backend_env(redis_url: str, db_dsn: str, key_prefix: str, *, cluster: bool = False) -> dict[str, str]:
    """The environment that points ``redisched`` at a Redis, a database and a key prefix."""
    return {
        "REDISCHED_REDIS_URL": redis_url,
        "SCHEDULER_DB_URI": db_dsn,
        "REDISCHED_KEY_PREFIX": key_prefix,
        "REDISCHED_REDIS_CLUSTER": "1" if cluster else "0",
    }
