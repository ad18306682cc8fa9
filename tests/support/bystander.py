"""A bystander: another client of the same Redis, in its own process, that pushes and pops its
own tasks and times each round. Its own process so that what it measures is Redis serving it,
not the test process' GIL or garbage collector: in CI, late in the suite, a bystander thread
once waited 284 ms while no script call took Redis more than 2 ms."""

from __future__ import annotations

import multiprocessing
import queue
import time
from dataclasses import dataclass, field


@dataclass
class Served:
    latencies: list[float] = field(default_factory=list)
    error: str | None = None


def _serve(url: str, stop, rounds, errors, deadline_s: float) -> None:
    import redis

    from redisched.client import Client
    from redisched.queue.layout import QueueLayout
    from tests.factories import normalizer_data

    tasks = Client(redis.Redis.from_url(url), QueueLayout(prefix="bystander")).queue("normalizer")
    deadline = time.monotonic() + deadline_s
    while not stop.is_set() and time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            tasks.push(organisation="org1", priority=1, data=normalizer_data())
            assert len(tasks.pop(limit=1)) == 1, "its own task was not popped"
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.put(repr(exc))
            return
        rounds.put(time.perf_counter() - t0)
        time.sleep(0.002)


class Bystander:
    """``start()``, then ``served()`` while it runs, ``stop()`` at the end."""

    def __init__(self, url: str, deadline_s: float = 120) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._rounds = context.Queue()
        self._errors = context.Queue()
        self._served = Served()
        self._process = context.Process(
            target=_serve, args=(url, self._stop, self._rounds, self._errors, deadline_s), daemon=True
        )

    def start(self) -> None:
        self._process.start()

    def first_round(self, timeout_s: float) -> bool:
        """Wait until it was served once (a new process imports redisched first)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._process.is_alive():
            if self.served().latencies or self._served.error:
                return bool(self._served.latencies)
            time.sleep(0.05)
        return bool(self.served().latencies)

    def served(self) -> Served:
        """What it has been served so far."""
        while True:
            try:
                self._served.latencies.append(self._rounds.get_nowait())
            except queue.Empty:
                break
        try:
            self._served.error = self._served.error or self._errors.get_nowait()
        except queue.Empty:
            pass
        return self._served

    def stop(self) -> Served:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
        return self.served()
