"""What the embedded servers share: their constants and errors, small process helpers, the
folder's state file, and the start/attach/stop protocol (``_Embedded``) each server fills in."""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

import psutil


log = logging.getLogger("redisched.embedded")


HOST = "127.0.0.1"
DEFAULT_DATABASE = "redisched"
PG_SUPERUSER = "postgres"
LOCK_TIMEOUT = 60.0
READY_TIMEOUT = 60.0  # a large AOF takes a while to load
STOP_TIMEOUT = 30.0
BUSY_REPLY_THRESHOLD_MS = 500  # valkey answers BUSY to others once a script runs longer (default 5,000)
_STATE_FILE = ".embedded.json"


class EmbeddedError(RuntimeError):
    """An embedded server could not be started, reached or stopped."""


# --- small helpers ---------------------------------------------------------------------------


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[-1]}"))


def _free_port(preferred: int | None = None) -> int:
    """``preferred`` when nothing listens on it, else a port the kernel says is free."""
    if preferred:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, preferred))
                return preferred
            except OSError:
                pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _proc(pid: int) -> psutil.Process | None:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _State:
    """``<data_dir>/.embedded.json``: passwords (generated once) and the last ports used.

    Read-modify-write under an flock on ``.embedded.json.lock``: the Valkey and Postgres of a
    folder may be started by different processes at the same time.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / _STATE_FILE
        self._mutex = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._mutex:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # held for microseconds
                yield
            finally:
                os.close(fd)

    def get(self, key: str, default: Any = None) -> Any:
        return self._read().get(key, default)

    def update(self, **values: Any) -> None:
        with self._locked():
            self._write({**self._read(), **values})

    def secret(self, key: str) -> str:
        """The stored secret ``key``, generated and stored on first use."""
        with self._locked():
            data = self._read()
            if not data.get(key):
                data[key] = secrets.token_hex(24)
                self._write(data)
            return data[key]

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        os.replace(tmp, self.path)

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise EmbeddedError(f"cannot read {self.path}: {exc}") from exc


# --- the shared start/attach/stop protocol -------------------------------------------------


class _Embedded:
    """One server in one folder: lock, attach-or-launch, reference-counted stop."""

    name = "server"
    _local: dict[Path, int] = {}  # server dir -> started objects in this process

    def __init__(self, data_dir: Path | str, *, state: _State | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.dir = self.data_dir / self.name
        self._state = state or _State(self.data_dir)
        self._mutex = threading.RLock()
        self._started_pid: int | None = None  # os.getpid() of the process that started us
        self._url: str | None = None
        self.attached = False  # True when we joined a server another process started

    # subclass hooks
    def _prepare(self) -> None: ...
    def _probe(self) -> str | None:  # url of a running server of this folder, or None
        raise NotImplementedError
    def _launch(self) -> str:  # start the server, return its url
        raise NotImplementedError
    def _shutdown(self) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        if self._url is None:
            raise EmbeddedError(f"embedded {self.name} is not started")
        return self._url

    @property
    def running(self) -> bool:
        return self._started_pid == os.getpid()

    def start(self) -> str:
        """Start (or attach to) the server; returns its URL. Idempotent."""
        with self._mutex:
            if self.running:
                return self.url
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._prepare()
            t0 = time.perf_counter()
            with self._folder_lock():
                url = self._probe()
                self.attached = url is not None
                if url is None:
                    url = self._launch()
                self._users_update(add=True)
                self._local[self.dir] = self._local.get(self.dir, 0) + 1
            self._url = url
            self._started_pid = os.getpid()
            atexit.register(self.stop)
            log.info(
                "embedded %s %s in %.2fs: %s",
                self.name,
                "attached" if self.attached else "started",
                time.perf_counter() - t0,
                redact(url),
            )
            return url

    def stop(self) -> None:
        """Detach; the last attached process stops the server. Idempotent, safe in atexit."""
        with self._mutex:
            if not self.running:
                return  # never started, already stopped, or a forked child: not ours to stop
            atexit.unregister(self.stop)
            self._started_pid = None
            with self._folder_lock():
                self._local[self.dir] = self._local.get(self.dir, 1) - 1
                if self._local[self.dir] > 0:
                    return  # another object of this process still uses it
                del self._local[self.dir]
                others = self._users_update(add=False)
                if others:
                    log.info("embedded %s left running for pids %s", self.name, others)
                    return
                t0 = time.perf_counter()
                self._shutdown()
                log.info("embedded %s stopped in %.2fs", self.name, time.perf_counter() - t0)

    def __enter__(self) -> _Embedded:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # folder lock and attached-process list
    @contextlib.contextmanager
    def _folder_lock(self) -> Iterator[None]:
        path = self.dir / "redisched.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() > deadline:
                        raise EmbeddedError(
                            f"{self.dir} is locked by another process for more than "
                            f"{LOCK_TIMEOUT:.0f}s ({path}); is a start or stop of it stuck?"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _users_update(self, *, add: bool) -> list[int]:
        """Record (or drop) this process; return the other live attached pids."""
        path = self.dir / "redisched.users"
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            entries = []
        me = os.getpid()
        live: list[list[float]] = []
        for pid, created in entries:
            proc = _proc(int(pid))
            if pid != me and proc is not None and abs(proc.create_time() - created) < 1.0:
                live.append([pid, created])
        others = [int(pid) for pid, _ in live]
        if add:
            live.append([me, psutil.Process(me).create_time()])
        path.write_text(json.dumps(live))
        return others
