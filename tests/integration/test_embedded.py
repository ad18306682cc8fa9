"""The zero-setup default: real valkey-server and Postgres from pip packages, in a data folder.

Needs no external server. Runs as root (Postgres then runs as a system user) and as a normal
user alike.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
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
    monkeypatch.setattr(embedded.valkey, "READY_TIMEOUT", 0.5)
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


@pytest.fixture
def private_folder(template: Path):
    """A ``mktemp -d`` data folder (mode 0700, as CI scripts and containers make them) that
    holds a copy of ``template``."""
    folder = Path(tempfile.mkdtemp(prefix="redisched-private-"))
    shutil.copytree(template, folder, symlinks=True, dirs_exist_ok=True)
    folder.chmod(0o700)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _service_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDISCHED_", "SCHEDULER_", "QUEUE_URI"))}
    return env | {"REDISCHED_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), **extra}


def test_redisched_with_nothing_configured_serves_from_a_private_folder(private_folder: Path) -> None:
    """`REDISCHED_DATA_DIR=$(mktemp -d) redisched`: no command is serve, embedded servers start
    in the 0700 folder (as root too), a push pops, requests are logged (errors with their
    reason), SIGTERM stops everything."""
    import httpx

    from tests.support.servers import free_port

    port = free_port()
    env = _service_env(private_folder, SCHEDULER_API_HOST="127.0.0.1", SCHEDULER_API_PORT=str(port))
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", "redisched"], env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"exited {proc.returncode}: {log.read().decode()[-3000:]}")
                assert time.monotonic() < deadline, "the service did not come up"
                time.sleep(0.2)
            data = {"boefje": {"id": "dns-records"}, "input_ooi": "Hostname|internet|e.example", "organization": "org1"}
            pushed = httpx.post(f"{base}/schedulers/boefje/push", json={"organisation": "org1", "priority": 3, "data": data})
            assert pushed.status_code == 201, pushed.text
            popped = httpx.post(f"{base}/schedulers/boefje/pop").json()["results"]
            assert [task["id"] for task in popped] == [pushed.json()["id"]]
            missing = httpx.get(f"{base}/schedules/{pushed.json()['id']}")
            assert missing.status_code == 404
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        log.seek(0)
        output = log.read().decode()
    assert "Traceback" not in output
    assert '"POST /schedulers/boefje/pop HTTP/1.1" 200' in output, "the access log is on by default"
    assert f'"GET /schedules/{pushed.json()["id"]}" 404 {missing.json()["detail"]}' in output
    assert private_folder.stat().st_mode & 0o077 == 0 or os.geteuid() == 0
    if os.geteuid() == 0:
        _only_search_was_granted(private_folder)


def _only_search_was_granted(folder: Path) -> None:
    """``folder``'s ACL lets the Postgres system user pass (x) and changes nobody else's access."""
    import pwd

    from redisched.embedded import root as acl

    uid = pwd.getpwnam(acl.DEFAULT_PG_SYSTEM_USER).pw_uid
    entries = {(tag, who): perm for tag, perm, who in acl._acl(folder, folder.stat().st_mode)}
    assert entries[(acl._USER, uid)] == 0o1
    assert entries[(acl._GROUP_OBJ, acl._NO_ID)] == 0 and entries[(acl._OTHER, acl._NO_ID)] == 0
    assert [key for key in entries if key[0] in (acl._USER, acl._GROUP)] == [(acl._USER, uid)]


@pytest.mark.skipif(os.geteuid() != 0, reason="the system user exists only when redisched runs as root")
def test_as_root_the_system_user_may_pass_but_not_look(tmp_path: Path) -> None:
    from redisched.embedded.root import open_the_way, system_user

    outer = Path(tempfile.mkdtemp(prefix="redisched-way-"))  # 0700, like /root
    try:
        (outer / "inner").mkdir(mode=0o700)
        target = outer / "inner" / "postgres"
        target.mkdir()
        name, uid, gid = system_user()
        os.chown(target, uid, gid)
        as_user = {"user": uid, "group": gid, "extra_groups": [], "capture_output": True}
        assert subprocess.run(["stat", str(target)], **as_user).returncode != 0

        assert open_the_way(target, name, uid, gid) == [outer, outer / "inner"]
        assert open_the_way(target, name, uid, gid) == [], "idempotent"
        assert subprocess.run(["stat", str(target)], **as_user).returncode == 0, "it may pass"
        assert subprocess.run(["ls", str(outer)], **as_user).returncode != 0, "but not list"
        _only_search_was_granted(outer)
    finally:
        shutil.rmtree(outer, ignore_errors=True)


_NO_ACLS = textwrap.dedent(
    """
    import errno, os, sys
    def unsupported(*args, **kwargs):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
    os.setxattr = unsupported  # a filesystem without ACLs
    from redisched.cli import main
    sys.exit(main(["migrate"]))
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs the system user to be let through")
def test_as_root_a_folder_the_system_user_cannot_reach_is_one_line_and_exit_1(redis_url: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="redisched-noacl-"))
    try:
        env = _service_env(folder, REDISCHED_REDIS_URL=redis_url)
        done = subprocess.run([sys.executable, "-c", _NO_ACLS], env=env, capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert done.returncode == 1
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert lines[0].startswith("redisched: ") and "has no ACLs" in lines[0] and "SCHEDULER_DB_URI" in lines[0]


def test_serve_with_workers_runs_n_api_processes_beside_one_worker(private_folder: Path) -> None:
    """`redisched serve --workers 2`, nothing configured: one set of embedded servers, two API
    processes answering on the one port, one worker process whose snapshotter brings a pop
    into the history; SIGTERM stops every one of them."""
    import httpx

    from tests.support.servers import free_port

    port = free_port()
    env = _service_env(private_folder, REDISCHED_HEARTBEAT_SECONDS="0.2", REDISCHED_ACCESS_LOG="false")
    cli = [sys.executable, "-m", "redisched", "serve", "--workers", "2", "--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cli, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        children: list[psutil.Process] = []
        try:
            deadline = time.monotonic() + 90
            while True:
                with contextlib.suppress(httpx.TransportError):
                    overview = httpx.get(f"{base}/dashboard/overview", timeout=2)
                    if overview.status_code == 200 and len(overview.json()["api_processes"]) == 2:
                        break
                if proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"exited {proc.returncode}: {log.read().decode()[-3000:]}")
                assert time.monotonic() < deadline, "two API processes did not come up"
                time.sleep(0.2)
            children = psutil.Process(proc.pid).children(recursive=True)
            commands = [" ".join(child.cmdline()) for child in children]
            assert sum("spawn_main" in command for command in commands) == 2, commands  # uvicorn's API processes
            assert sum(command.endswith("-m redisched worker") for command in commands) == 1, commands
            assert sum("valkey-server" in command for command in commands) == 1, commands

            data = {"boefje": {"id": "dns-records"}, "input_ooi": "Hostname|internet|w.example", "organization": "org1"}
            pushed = httpx.post(f"{base}/schedulers/boefje/push", json={"organisation": "org1", "priority": 3, "data": data})
            assert pushed.status_code == 201, pushed.text
            [popped] = httpx.post(f"{base}/schedulers/boefje/pop").json()["results"]
            assert popped["id"] == pushed.json()["id"]
            listed: list[str] = []
            deadline = time.monotonic() + 30  # a listing waits ~1 s for the history: ask again while the machine is slow
            while not listed and time.monotonic() < deadline:
                query = {"scheduler_id": "boefje", "status": "dispatched"}
                listed = [task["id"] for task in httpx.get(f"{base}/tasks", params=query, timeout=10).json()["results"]]
            assert listed == [popped["id"]], "the worker's snapshotter brought the pop into the history"

            # SIGTERM mid-request: long-polls held by both API processes are answered, not cut
            def poll() -> tuple[float, int, bytes]:
                response = httpx.post(f"{base}/schedulers/normalizer/pop", params={"wait": 30}, timeout=40)
                return time.monotonic(), response.status_code, response.content

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                polls = [pool.submit(poll) for _ in range(8)]
                time.sleep(1.5)
                assert not any(p.done() for p in polls)
                signalled = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                answered = [p.result(timeout=40) for p in polls]
            latest = max(at for at, _, _ in answered) - signalled
            assert [(code, body) for _, code, body in answered] == [(200, b'{"results":[]}')] * 8, answered
            assert latest < 5.0, latest
            print(f"\nserve --workers 2, SIGTERM during 8 long-polls: all answered within {latest:.2f} s")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        log.seek(0)
        output = log.read().decode()
    assert "Traceback" not in output, output[-3000:]
    assert _gone(*(child.pid for child in children)), "every API, worker and server process stopped"
