"""Hammering shared state from threads, as the threads sharing one sync Client do."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable


def errors_in_threads(work: Callable[[int, int], None], seconds: float = 2.0, threads: int = 4) -> list[Exception]:
    """``work(thread index, i)`` for i = 0, 1, ... from ``threads`` threads, the interpreter
    switching between them as often as it can, until the first error or ``seconds``: the
    errors raised."""
    errors: list[Exception] = []
    deadline = time.monotonic() + seconds

    def run(k: int) -> None:
        try:
            for i in range(1_000_000):
                work(k, i)
                if errors or (i % 500 == 0 and time.monotonic() > deadline):
                    return
        except Exception as exc:  # noqa: BLE001 - the failure under test
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        started = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
        for thread in started:
            thread.start()
        for thread in started:
            thread.join(10)
    finally:
        sys.setswitchinterval(interval)
    return errors
