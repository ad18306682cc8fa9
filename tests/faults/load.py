"""A steady load of runners (the direct client and HTTP) and the ledger of what each was told.
Every load loop is bounded in count and in time."""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

from redisched.client import Client
from redisched.errors import StaleLease
from tests.faults.common import REDIS_DOWN, _seq, layout, task_data


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

    def __init__(
        self, redis_url: str, prefix: str, ledger: Ledger, *, queue: str = "boefje", lease_ms: int = 2000,
        features: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """``features`` (common.FAIR_LIMITED): the layout's, and pushes for 3 organisations,
        one task in 4 of the boefje shodan."""
        # Timeouts: a Redis that is killed answers nothing; a call must fail, not hang.
        self.client = Client(
            redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2),
            layout(prefix, lease_ms=lease_ms, **(features or {})),
        )
        self.queue = self.client.queue(queue)
        self.ledger = ledger
        self.mixed = bool(features)

    def push(self, task_id: str) -> str:
        n = next(_seq)
        organisation, boefje_id = "org1", "dns-records"
        if self.mixed:
            organisation, boefje_id = f"org{n % 3 + 1}", ("shodan" if n % 4 == 0 else "dns-records")
        data = task_data(task_id, organisation, boefje_id)
        try:
            self.queue.push(task_id=task_id, organisation=organisation, priority=n % 1000 + 1, data=data)
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
