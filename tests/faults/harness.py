"""The fault scenarios' plumbing: servers a test may kill, a steady load of runners, the
snapshotter and reaper on a loop of their own, and the audit every scenario ends with.

Everything runs on 127.0.0.1 against servers the test starts itself (a private redis-server,
a fresh database on the local Postgres or a private embedded Postgres, private API processes).
Every load loop is bounded in count and in time; every server is stopped, also on failure.

Audit, the same for every scenario (``audit``): once the load has stopped, the reaper is
stopped and the snapshotter has drained, every task a client was told was pushed is either
finished exactly once (one confirmed completion, Postgres says completed, Redis dropped it) or
still live (queued/dispatched/running) with Postgres holding the very same version (status and
rev) as Redis. Redelivery after a lease expiry (a task popped more than once) is at-least-once
and counted on its own; two confirmed completions of one task are a duplicate.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
import redis.asyncio as aredis

from redisched.client import Client
from redisched.errors import StaleLease
from redisched.history.db import open_pool
from redisched.history.migrate import migrate
from redisched.history.schedules import ScheduleStore
from redisched.history.snapshotter import Snapshotter, wait_caught_up
from redisched.history.tasks import TaskStore
from redisched.models import SCHEDULERS
from redisched.queue.layout import QueueLayout
from redisched.queue.queue import TaskQueues
from redisched.queue.records import decode_record
from tests.conftest import PG_ADMIN_DSN
from tests.support import api as support_api
from tests.support.databases import throwaway_database
from tests.support.servers import free_port, redis_server_binary, wait_for_redis

ROOT = Path(__file__).resolve().parents[2]
LIVE = ("queued", "dispatched", "running")
FINISHED = ("completed", "failed", "cancelled")
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, ConnectionError, OSError)
_seq = itertools.count()


def log(message: str) -> None:
    print(message, flush=True)


def layout(prefix: str, *, lease_ms: int = 2000) -> QueueLayout:
    """Short dispatch leases (redelivery within seconds) and tries enough that no task of a
    scenario is failed by the reaper: the audit expects completed or live."""
    return QueueLayout(prefix=prefix, dispatch_lease_ms=lease_ms, running_lease_ms=lease_ms, max_tries=1000)


def task_data(task_id: str, organisation: str = "org1") -> dict[str, Any]:
    """A boefje payload of its own id (task id == data.id) and a hash no other task shares."""
    return {
        "id": task_id,
        "boefje": {"id": "dns-records", "name": "dns-records", "version": None, "oci_image": None},
        "input_ooi": f"Hostname|internet|f{next(_seq)}-{task_id[:8]}.example",
        "organization": organisation,
    }


# --- servers -----------------------------------------------------------------------------------


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


# --- the snapshotter and reaper, on a loop of their own -------------------------------------


class Background:
    """An asyncio loop in a thread running the snapshotter and a lease reaper (what
    ``redisched worker`` runs), so a test can block, kill and sleep freely."""

    def __init__(self, redis_url: str, dsn: str, prefix: str, *, lease_ms: int = 2000, reap_every: float = 0.2) -> None:
        self.redis_url, self.dsn, self.prefix = redis_url, dsn, prefix
        self.lease_ms, self.reap_every = lease_ms, reap_every
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="faults-background", daemon=True)
        self.reaped = 0
        self.reap_errors = 0
        self._tasks: dict[str, asyncio.Task] = {}

    def __enter__(self) -> Background:
        self.thread.start()
        try:
            self.call(self._open())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _open(self) -> None:
        # No socket timeout: the snapshotter blocks on its streams (see app.open_redis).
        self.redis = aredis.Redis(connection_pool=aredis.BlockingConnectionPool.from_url(self.redis_url, max_connections=512))
        self.pool = await open_pool(self.dsn, max_size=4, timeout=5)
        self.queues = TaskQueues(self.redis, layout(self.prefix, lease_ms=self.lease_ms))
        self.tasks = TaskStore(self.pool)
        self.schedules = ScheduleStore(self.pool, self.redis, self.queues.layout)
        self.snapshotter = Snapshotter(
            self.redis, self.tasks, self.schedules, layout=self.queues.layout, forget=self.queues.forget_finished, block_ms=50
        )
        self._tasks["snapshotter"] = asyncio.create_task(self.snapshotter.run())
        self._tasks["reaper"] = asyncio.create_task(self._reap())

    async def _reap(self) -> None:
        while True:
            for scheduler_id in SCHEDULERS:
                try:
                    requeued, failed = await self.queues.reap(scheduler_id)
                    self.reaped += requeued + failed
                except Exception:  # Redis away: next round
                    self.reap_errors += 1
            await asyncio.sleep(self.reap_every)

    def stop_reaper(self) -> None:
        async def stop() -> None:
            task = self._tasks.pop("reaper", None)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        self.call(stop())

    def drained(self, timeout: float = 30) -> bool:
        """Whether the snapshotter applied every event written before this call."""
        probe = aredis.Redis.from_url(self.redis_url, socket_timeout=5)

        async def wait() -> bool:
            try:
                return await wait_caught_up(probe, QueueLayout(self.prefix), timeout=timeout)
            finally:
                await probe.aclose()

        return self.call(wait(), timeout=timeout + 10)

    def close(self) -> None:
        async def shut() -> None:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            if hasattr(self, "pool"):
                await self.pool.close()
            if hasattr(self, "redis"):
                await self.redis.aclose()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(shut(), timeout=20)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        self.loop.close()


# --- the load ---------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the clients were told, kept by every load thread (appends are atomic in CPython)."""

    pushed: dict[str, float] = field(default_factory=dict)  # task id -> when the push was acked
    push_uncertain: set[str] = field(default_factory=set)  # the push call failed: may or may not be in
    pops: collections.Counter = field(default_factory=collections.Counter)  # task id -> times handed out
    completed: collections.Counter = field(default_factory=collections.Counter)  # confirmed completions
    complete_uncertain: set[str] = field(default_factory=set)
    complete_refused: collections.Counter = field(default_factory=collections.Counter)  # stale/not found
    ops: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, "push"|"pop"|"complete")
    errors: collections.Counter = field(default_factory=collections.Counter)
    http_status: collections.Counter = field(default_factory=collections.Counter)
    bad_answers: list[str] = field(default_factory=list)  # 500s, 503s without Retry-After, slow answers
    in_flight: int = 0  # popped, completion not yet answered
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def flight(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta

    def op(self, kind: str) -> None:
        self.ops.append((time.monotonic(), kind))

    def ops_between(self, start: float, end: float, kind: str | None = None) -> int:
        return sum(1 for t, k in list(self.ops) if start <= t <= end and (kind is None or k == kind))

    def per_second(self, start: float, end: float, kind: str) -> list[int]:
        buckets = [0] * max(1, int(end - start))
        for t, k in list(self.ops):
            if k == kind and start <= t < start + len(buckets):
                buckets[int(t - start)] += 1
        return buckets


class Load:
    """Pushing and popping runners, as threads, until ``stop()`` or their bounds.

    ``push`` and ``pop_and_complete`` are the transport (direct client or HTTP); a runner
    completes each task it popped with the pop's lease token. Every call is bounded in count
    (``max_ops`` per thread) and the whole load in time (``max_seconds``)."""

    def __init__(
        self,
        ledger: Ledger,
        push: Callable[[str], str],
        pop_and_complete: Callable[[], int],
        *,
        pushers: int = 2,
        poppers: int = 2,
        push_rate: float = 150.0,
        pop_rate: float | None = None,
        max_ops: int = 20_000,
        max_seconds: float = 60.0,
    ) -> None:
        self.ledger = ledger
        self._push, self._pop = push, pop_and_complete
        self.pushers, self.poppers = pushers, poppers
        self.push_interval = pushers / push_rate
        self.pop_interval = poppers / pop_rate if pop_rate else 0.0
        self.max_ops, self.max_seconds = max_ops, max_seconds
        self.stopping = threading.Event()
        self.pushing = threading.Event()
        self.pushing.set()
        self.popping = threading.Event()
        self.popping.set()
        self.threads: list[threading.Thread] = []
        self.crashed: list[BaseException] = []
        self._idle = threading.Semaphore(0)

    def start(self) -> Load:
        self.deadline = time.monotonic() + self.max_seconds
        for i in range(self.pushers):
            self.threads.append(threading.Thread(target=self._guard, args=(self._push_loop,), name=f"pusher-{i}", daemon=True))
        for i in range(self.poppers):
            self.threads.append(threading.Thread(target=self._guard, args=(self._pop_loop,), name=f"popper-{i}", daemon=True))
        for thread in self.threads:
            thread.start()
        return self

    def _guard(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as exc:  # a bug in the load itself: the test fails on it
            self.crashed.append(exc)

    def _running(self, done: int) -> bool:
        return not self.stopping.is_set() and done < self.max_ops and time.monotonic() < self.deadline

    def _push_loop(self) -> None:
        done, next_at = 0, time.monotonic()
        while self._running(done):
            if not self.pushing.is_set():
                self.pushing.wait(0.05)
                continue
            task_id = str(uuid.uuid4())
            outcome = self._push(task_id)
            if outcome == "ok":
                self.ledger.pushed[task_id] = time.monotonic()
                self.ledger.op("push")
            else:
                self.ledger.push_uncertain.add(task_id)
                self.ledger.errors[f"push {outcome}"] += 1
                time.sleep(0.02)
            done += 1
            next_at += self.push_interval
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - 1)  # no burst after a stall

    def _pop_loop(self) -> None:
        done, next_at = 0, time.monotonic()
        while self._running(done):
            if not self.popping.is_set():
                self.popping.wait(0.05)
                continue
            if self._pop() == 0:
                time.sleep(0.01)
            done += 1
            if self.pop_interval:
                next_at += self.pop_interval
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at, time.monotonic() - 1)

    def pause(self, pushes: bool = True, pops: bool = True) -> None:
        if pushes:
            self.pushing.clear()
        if pops:
            self.popping.clear()
        time.sleep(0.3)  # a call under way finishes

    def resume(self) -> None:
        self.pushing.set()
        self.popping.set()

    def stop(self) -> None:
        self.stopping.set()
        self.resume()
        for thread in self.threads:
            thread.join(30)
        assert not [t.name for t in self.threads if t.is_alive()], "load threads did not stop"
        assert not self.crashed, f"load threads crashed: {self.crashed!r}"


def retrying(call: Callable[[], Any], ledger: Ledger, what: str, seconds: float = 10.0) -> Any:
    """``call`` until it does not fail for Redis being away (at most ``seconds``); raises then."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except REDIS_DOWN:
            ledger.errors[f"{what} redis down"] += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class DirectRunner:
    """Push and pop-then-complete with the sync direct client (``redisched.client``)."""

    def __init__(self, redis_url: str, prefix: str, ledger: Ledger, *, queue: str = "boefje", lease_ms: int = 2000) -> None:
        # Timeouts: a Redis that is killed answers nothing; a call must fail, not hang.
        self.client = Client(
            redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2), layout(prefix, lease_ms=lease_ms)
        )
        self.queue = self.client.queue(queue)
        self.ledger = ledger

    def push(self, task_id: str) -> str:
        try:
            self.queue.push(task_id=task_id, organisation="org1", priority=next(_seq) % 1000 + 1, data=task_data(task_id))
        except REDIS_DOWN as exc:
            return type(exc).__name__
        return "ok"

    def pop_and_complete(self) -> int:
        try:
            popped = self.queue.pop(limit=1)
        except REDIS_DOWN as exc:
            self.ledger.errors[f"pop {type(exc).__name__}"] += 1
            time.sleep(0.02)
            return 0
        for record in popped:
            self.ledger.pops[record.id] += 1
            self.ledger.flight(1)
            self.ledger.op("pop")
            self.complete(record.id, record.lease)
        return len(popped)

    def complete(self, task_id: str, token: str | None) -> None:
        """Completion with the lease token; retried while Redis is away (uncertain then)."""
        uncertain = False
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    done = self.queue.patch(task_id, {"status": "completed"}, token=token)
                except StaleLease:
                    self.ledger.complete_refused[task_id] += 1
                    if uncertain:
                        self.ledger.complete_uncertain.add(task_id)
                    return
                except REDIS_DOWN as exc:
                    uncertain = True
                    self.ledger.errors[f"complete {type(exc).__name__}"] += 1
                    if time.monotonic() > deadline:
                        self.ledger.complete_uncertain.add(task_id)
                        return
                    time.sleep(0.05)
                    continue
                if done is None:  # Redis no longer holds it (lost, or finished and forgotten)
                    self.ledger.complete_refused[task_id] += 1
                    if uncertain:
                        self.ledger.complete_uncertain.add(task_id)
                    return
                self.ledger.completed[task_id] += 1
                self.ledger.op("complete")
                return
        finally:
            self.ledger.flight(-1)

    def close(self) -> None:
        self.client.close()


class HttpRunner:
    """Push and pop-then-complete over the HTTP API (``X-Lease-Token`` on the completion).

    Any answer must come within ``answer_within`` seconds and be a success, a 409 for a stale
    token, or a 503 with ``Retry-After``; anything else is recorded in ``ledger.bad_answers``."""

    def __init__(self, base_url: str, ledger: Ledger, *, queue: str = "boefje", answer_within: float = 8.0) -> None:
        self.base_url = base_url
        self.ledger = ledger
        self.queue = queue
        self.answer_within = answer_within
        self.in_request = 0
        self._local = threading.local()

    @property
    def http(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(timeout=httpx.Timeout(15.0, connect=2.0))
            self._clients.append(client)
        return client

    _clients: list[httpx.Client] = []

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response | str:
        started = time.monotonic()
        self.in_request += 1
        try:
            response = self.http.request(method, f"{self.base_url}{path}", **kwargs)
        except httpx.TransportError as exc:
            return type(exc).__name__
        finally:
            self.in_request -= 1
        took = time.monotonic() - started
        self.ledger.http_status[response.status_code] += 1
        if took > self.answer_within:
            self.ledger.bad_answers.append(f"{method} {path}: {response.status_code} after {took:.1f} s")
        if response.status_code >= 500 and (response.status_code != 503 or "retry-after" not in response.headers):
            self.ledger.bad_answers.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return response

    def push(self, task_id: str) -> str:
        body = {"id": task_id, "organisation": "org1", "priority": next(_seq) % 1000 + 1, "data": task_data(task_id)}
        response = self._request("POST", f"/schedulers/{self.queue}/push", json=body)
        if isinstance(response, str):
            return response
        if response.status_code == 201:
            return "ok"
        return f"http {response.status_code}"

    def pop_and_complete(self) -> int:
        response = self._request("POST", f"/schedulers/{self.queue}/pop?limit=1")
        if isinstance(response, str) or response.status_code != 200:
            what = response if isinstance(response, str) else f"http {response.status_code}"
            self.ledger.errors[f"pop {what}"] += 1
            time.sleep(0.05)
            return 0
        results = response.json()["results"]
        token = response.headers.get("x-lease-token")
        for task in results:
            self.ledger.pops[task["id"]] += 1
            self.ledger.flight(1)
            self.ledger.op("pop")
            self.complete(task["id"], token)
        return len(results)

    def complete(self, task_id: str, token: str | None) -> None:
        uncertain = False
        deadline = time.monotonic() + 15
        try:
            while True:
                response = self._request(
                    "PATCH", f"/tasks/{task_id}", json={"status": "completed"}, headers={"X-Lease-Token": token or ""}
                )
                if isinstance(response, str) or response.status_code == 503:
                    uncertain = True
                    what = response if isinstance(response, str) else "http 503"
                    self.ledger.errors[f"complete {what}"] += 1
                    if time.monotonic() > deadline:
                        self.ledger.complete_uncertain.add(task_id)
                        return
                    time.sleep(0.1)
                    continue
                if response.status_code == 200:
                    self.ledger.completed[task_id] += 1
                    self.ledger.op("complete")
                    return
                self.ledger.complete_refused[task_id] += 1
                if uncertain:
                    self.ledger.complete_uncertain.add(task_id)
                if response.status_code != 409:
                    self.ledger.bad_answers.append(f"PATCH {task_id}: {response.status_code} {response.text[:200]}")
                return
        finally:
            self.ledger.flight(-1)

    def close(self) -> None:
        for client in self._clients:
            client.close()


# --- the audit --------------------------------------------------------------------------------


@dataclass
class Audit:
    name: str
    pushed: int = 0
    live: int = 0
    finished: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    redelivered: int = 0  # extra pops: handed out again after a lease expiry
    disagree: list[str] = field(default_factory=list)  # Postgres and Redis differ
    # live again in Redis with an older version, while Postgres has it finished: it will run again
    resurrected: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)  # Postgres rows no client pushed
    finished_left_in_redis: int = 0
    uncertain_pushes: int = 0
    uncertain_in: int = 0
    drained: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self, load_ops: int, during_fault: int, faults: int) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.extra.items())
        return (
            f"[faults] {self.name}: load ops={load_ops} during-fault={during_fault} faults={faults} "
            f"pushed={self.pushed} finished={self.finished} live={self.live} lost={len(self.lost)} "
            f"duplicated={len(self.duplicated)} redelivered={self.redelivered} "
            f"uncertain-pushes={self.uncertain_pushes} (in={self.uncertain_in}) "
            f"resurrected={len(self.resurrected)} pg-disagrees={len(self.disagree)} drained={self.drained} {extra}".rstrip()
        )

    def check(self) -> None:
        assert self.drained, f"{self.name}: the snapshotter did not drain"
        assert not self.lost, f"{self.name}: {len(self.lost)} tasks lost, e.g. {self.lost[:5]}"
        assert not self.duplicated, f"{self.name}: {len(self.duplicated)} tasks completed twice, e.g. {self.duplicated[:5]}"
        assert not self.resurrected, f"{self.name}: finished tasks back in the queue: {self.resurrected[:3]}"
        assert not self.disagree, f"{self.name}: Postgres disagrees with Redis: {self.disagree[:5]}"
        assert not self.unexplained, f"{self.name}: Postgres holds tasks nobody pushed: {self.unexplained[:5]}"
        assert self.finished_left_in_redis == 0, f"{self.name}: finished tasks left in Redis"


def audit(name: str, ledger: Ledger, background: Background, redis_url: str, dsn: str, prefix: str) -> Audit:
    """Stop reaping, let the snapshotter drain, then compare the ledger, Redis and Postgres."""
    result = Audit(name)
    background.stop_reaper()
    result.drained = background.drained(timeout=30)
    in_redis: dict[str, Any] = {}
    client = redis.Redis.from_url(redis_url)
    try:
        for scheduler_id in SCHEDULERS:
            for raw in client.hgetall(layout(prefix).of(scheduler_id)[0].tasks).values():
                record = decode_record(raw)
                in_redis[record.id] = record
    finally:
        client.close()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT id::text, status, rev FROM tasks").fetchall()
    in_pg = {task_id: (status, str(rev)) for task_id, status, rev in rows}

    result.pushed = len(ledger.pushed)
    result.uncertain_pushes = len(ledger.push_uncertain)
    for task_id in list(ledger.pushed) + list(ledger.push_uncertain):
        acked = task_id in ledger.pushed
        record, stored = in_redis.get(task_id), in_pg.get(task_id)
        if record is None and stored is None:
            if acked:
                result.lost.append(task_id)
            continue
        if not acked:
            result.uncertain_in += 1
        if record is not None and record.status in LIVE:
            result.live += 1
            if stored is not None and stored[0] in FINISHED and int(stored[1]) > int(record.rev):
                result.resurrected.append(f"{task_id}: redis {record.status}/{record.rev} postgres {stored}")
            elif stored is None or stored != (record.status, record.rev):
                result.disagree.append(f"{task_id}: redis {record.status}/{record.rev} postgres {stored}")
            continue
        if record is not None:
            result.finished_left_in_redis += 1
        status = record.status if record is not None else stored[0]
        if status != "completed":
            result.disagree.append(f"{task_id}: finished as {status}, only completions were sent")
        elif stored is None or stored[0] != "completed":
            result.disagree.append(f"{task_id}: completed in Redis, Postgres has {stored}")
        elif not ledger.completed[task_id] and task_id not in ledger.complete_uncertain:
            result.disagree.append(f"{task_id}: completed, but no runner was told so")
        result.finished += 1
    known = set(ledger.pushed) | ledger.push_uncertain
    result.unexplained = [task_id for task_id in in_pg if task_id not in known]
    result.duplicated = [task_id for task_id, n in ledger.completed.items() if n > 1]
    result.redelivered = sum(n - 1 for n in ledger.pops.values() if n > 1)
    return result


def report(result: Audit, ledger: Ledger, fault_start: float, fault_end: float, faults: int) -> None:
    during = ledger.ops_between(fault_start, fault_end)
    log(result.line(len(ledger.ops), during, faults))
    if ledger.errors:
        log(f"[faults] {result.name}: client errors {dict(ledger.errors)}")
    if ledger.http_status:
        log(f"[faults] {result.name}: http answers {dict(sorted(ledger.http_status.items()))}")


def run_in_thread(function: Callable[[], Any]) -> concurrent.futures.Future:
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = executor.submit(function)
    executor.shutdown(wait=False)
    return future
