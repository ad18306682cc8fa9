"""The zero-setup default: real valkey-server and Postgres from pip packages, in a data folder.

Needs no external server. Runs as root (Postgres then runs as a system user) and as a normal
user alike.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redisched import embedded
from redisched.embedded import EmbeddedError, EmbeddedServers, EmbeddedValkey, ensure_servers

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]

# A second process on the same folder: starts, reports, then stops on "stop" or dies on EOF.
_OTHER = textwrap.dedent(
    """
    import json, sys
    from redisched.embedded import EmbeddedServers
    s = EmbeddedServers(sys.argv[1]).start()
    print(json.dumps({"redis_url": s.redis_url, "db_dsn": s.db_dsn,
                      "attached": [s.valkey.attached, s.postgres.attached]}), flush=True)
    if sys.stdin.readline().strip() == "stop":
        s.stop()
        print("stopped", flush=True)
    else:
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)  # a crash: no stop, no atexit
    """
)


class Other:
    def __init__(self, data_dir: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _OTHER, str(data_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        line = self.proc.stdout.readline()
        assert line, f"helper failed (exit {self.proc.wait()})"
        self.info = json.loads(line)

    def stop(self) -> None:
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "stopped"
        assert self.proc.wait(10) == 0

    def crash(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(10) == -signal.SIGKILL


@pytest.fixture
def data(tmp_path: Path):
    """A fresh data folder. As root, Postgres runs as a system user that must be able to
    traverse to it, and pytest's tmp_path sits under a 0700 /tmp/pytest-of-root: use /tmp."""
    if os.geteuid() != 0:
        yield tmp_path / "data"
        return
    base = Path(tempfile.mkdtemp(prefix="redisched-embedded-"))
    base.chmod(0o711)
    yield base / "data"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A data folder whose Postgres cluster exists (initdb once, ~2 s, not in every test)."""
    base = tmp_path_factory.mktemp("template")
    if os.geteuid() == 0:
        base = Path(tempfile.mkdtemp(prefix="redisched-embedded-"))
        base.chmod(0o711)
    EmbeddedServers(base / "data", redis=False).start().stop()
    yield base / "data"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def initialized(data: Path, template: Path) -> Path:
    """``data`` holding a copy of ``template`` (as root, start() re-chowns it for Postgres)."""
    shutil.copytree(template, data, symlinks=True)
    return data


def _pids(servers: EmbeddedServers) -> tuple[int, int]:
    valkey_pid = servers.valkey._server_pid()
    postmaster = servers.postgres._postmaster()
    assert valkey_pid and postmaster
    return valkey_pid, postmaster[0]


def _gone(*pids: int) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def test_start_write_stop_restart_persists(data: Path) -> None:
    t0 = time.perf_counter()
    with EmbeddedServers(data) as servers:
        started = time.perf_counter() - t0
        assert servers.redis_url.startswith("redis://:") and "@127.0.0.1:" in servers.redis_url
        assert servers.db_dsn.startswith("postgresql://postgres:") and servers.db_dsn.endswith("/redisched")
        assert servers.start() is servers  # idempotent
        pids = _pids(servers)

        r = redis.Redis.from_url(servers.redis_url)
        # a script past 500 ms makes valkey answer BUSY (a 503) to others, not stall them 5 s
        assert r.config_get("busy-reply-threshold") == {"busy-reply-threshold": "500"}
        r.set("answer", "42")
        r.rpush("list", *range(100))
        r.close()
        with pytest.raises(redis.AuthenticationError):
            url = servers.redis_url.replace(servers.redis_url.split("@")[0], "redis://")
            redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0)).ping()

        with psycopg.connect(servers.db_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(servers.db_dsn.replace(servers.db_dsn.split(":")[2].split("@")[0], "wrong"))
    servers.stop()  # idempotent
    assert _gone(*pids), "both servers are stopped"
    assert (data / "valkey" / "appendonlydir").is_dir()
    assert not (data / "postgres" / "data" / "postmaster.pid").exists(), "clean Postgres shutdown"
    if os.geteuid() == 0:
        assert (data / "postgres").stat().st_uid != 0, "Postgres runs as a non-root user"

    t0 = time.perf_counter()
    with EmbeddedServers(data) as servers:
        restarted = time.perf_counter() - t0
        assert not servers.valkey.attached and not servers.postgres.attached
        r = redis.Redis.from_url(servers.redis_url)
        assert r.get("answer") == b"42"
        assert r.llen("list") == 100
        r.close()
        with psycopg.connect(servers.db_dsn) as conn:
            assert conn.execute("SELECT v FROM t ORDER BY id").fetchall() == [("one",), ("two",)]
        pids = _pids(servers)
    assert _gone(*pids)
    print(f"first start {started:.2f}s, restart {restarted:.2f}s, timings {servers.timings}")


def test_second_process_attaches_and_last_one_stops(initialized: Path) -> None:
    data = initialized
    servers = EmbeddedServers(data).start()
    try:
        pids = _pids(servers)
        other = Other(data)
        assert other.info["attached"] == [True, True]
        assert other.info["redis_url"] == servers.redis_url
        assert other.info["db_dsn"] == servers.db_dsn
        other.stop()  # we are still attached: the servers keep running
        r = redis.Redis.from_url(servers.redis_url)
        assert r.ping()
        r.close()
        with psycopg.connect(servers.db_dsn) as conn:
            conn.execute("SELECT 1")

        # A process that crashes leaves no trace in the bookkeeping.
        Other(data).crash()
    finally:
        servers.stop()
    assert _gone(*pids)


def test_crashed_owner_servers_are_adopted(initialized: Path) -> None:
    data = initialized
    other = Other(data)
    assert other.info["attached"] == [False, False]
    other.crash()  # servers keep running, owner gone
    with EmbeddedServers(data) as servers:
        assert servers.valkey.attached and servers.postgres.attached
        assert servers.redis_url == other.info["redis_url"]
        pids = _pids(servers)
    assert _gone(*pids), "the last attached process stops adopted servers too"


def test_folder_in_use_by_unresponsive_server_fails_clearly(data: Path, monkeypatch) -> None:
    first = EmbeddedValkey(data)
    first.start()
    pid = first._server_pid()
    second = EmbeddedValkey(data)  # another user of the folder in this process
    assert second.start() == first.url and second.attached
    second.stop()
    assert redis.Redis.from_url(first.url).ping(), "still running for the first"
    monkeypatch.setattr(embedded, "READY_TIMEOUT", 0.5)
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(EmbeddedError, match=rf"in use by valkey-server pid {pid}.*does not answer"):
            EmbeddedValkey(data).start()
    finally:
        os.kill(pid, signal.SIGCONT)
        first.stop()
    assert _gone(pid)


def test_ensure_servers_embeds_only_what_is_missing(initialized: Path) -> None:
    data = initialized
    class S:
        redis_url = "redis://example:6379/0"
        db_uri = "postgresql://example/db"
        data_dir = data

    assert ensure_servers(S) == (S.redis_url, S.db_uri, None)

    S.db_uri = None
    redis_url, dsn, servers = ensure_servers(S)
    try:
        assert redis_url == S.redis_url and servers is not None
        assert servers.valkey is None and servers.redis_url is None
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("redisched",)
    finally:
        servers.stop()
    assert not (S.data_dir / "valkey" / "valkey.conf").exists()


def test_redact() -> None:
    assert embedded.redact("redis://:s3cret@127.0.0.1:1/0") == "redis://:***@127.0.0.1:1/0"
    assert embedded.redact("postgresql://postgres:pw@h:5/db") == "postgresql://postgres:***@h:5/db"
    assert embedded.redact("redis://h:1/0") == "redis://h:1/0"


def test_the_service_with_nothing_configured_pushes_and_pops(initialized: Path) -> None:
    """`redisched serve` with no Redis or Postgres URL: embedded servers, the API answers,
    a push pops, and SIGTERM stops everything."""
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from tests.servers import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDISCHED_", "SCHEDULER_", "QUEUE_URI"))}
    env |= {"REDISCHED_DATA_DIR": str(initialized), "SCHEDULER_API_HOST": "127.0.0.1", "SCHEDULER_API_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "redisched", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the service did not come up"
            time.sleep(0.2)
        data = {"boefje": {"id": "dns-records"}, "input_ooi": "Hostname|internet|e.example", "organization": "org1"}
        pushed = httpx.post(f"{base}/schedulers/boefje/push", json={"organisation": "org1", "priority": 3, "data": data})
        assert pushed.status_code == 201, pushed.text
        popped = httpx.post(f"{base}/schedulers/boefje/pop").json()["results"]
        assert [task["id"] for task in popped] == [pushed.json()["id"]]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
